"""What CNI put in the pod's network namespace, read once at sandbox start.

`netns_path(spec)` is the sandbox container's `linux.namespaces[type=network].path`
(CRI and `ctr run --with-ns network:<path>` set it; none means no network but lo).
`discover(path)` lists, inside that netns, every interface but lo (and our own
taps) with MAC, MTU and addresses, the main table's routes and the static
(NUD_PERMANENT) neighbours. IPv6 link-local addresses and routes are left out:
the guest kernel makes its own from the same MAC.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kata_shim.errors import InvalidArgument
from kata_shim.network import netlink
from kata_shim.network.netns import run_in_netns

__all__ = ["NetInterface", "NetnsState", "discover", "netns_path"]

OUR_SUFFIX = "_kata"  # taps and macvtaps this package creates end in it


@dataclass(frozen=True, slots=True)
class NetInterface:
    link: netlink.Link
    addresses: tuple[netlink.Address, ...]

    @property
    def name(self) -> str:
        return self.link.name


@dataclass(frozen=True, slots=True)
class NetnsState:
    path: Path
    interfaces: tuple[NetInterface, ...]
    routes: tuple[netlink.Route, ...]
    neighbours: tuple[netlink.Neighbour, ...]

    def by_index(self, index: int) -> NetInterface | None:
        return next((i for i in self.interfaces if i.link.index == index), None)


def netns_path(spec: Mapping[str, Any]) -> Path | None:
    """The network namespace path of an OCI spec (JSON form); None if it has none."""
    linux = spec.get("linux") or {}
    for ns in linux.get("namespaces") or []:
        if ns.get("type") == "network":
            path = ns.get("path") or ""
            if not path:
                return None  # a new, empty netns: nothing to carry into the VM
            if not path.startswith("/"):
                raise InvalidArgument(f"network namespace path {path!r} is not absolute")
            return Path(path)
    return None


def _link_local(address: str) -> bool:
    return ipaddress.ip_address(address).is_link_local


def _route_wanted(route: netlink.Route, indexes: set[int]) -> bool:
    if route.type != netlink.RTN_UNICAST or route.index not in indexes:
        return False
    return not (route.dest and _link_local(route.dest.split("/")[0]))


def _read(path: Path) -> NetnsState:
    with netlink.Netlink() as nl:
        links = [
            link for link in nl.links() if not link.loopback and not link.name.endswith(OUR_SUFFIX)
        ]
        indexes = {link.index for link in links}
        addresses = [a for a in nl.addresses() if a.index in indexes and not _link_local(a.address)]
        routes = [r for r in nl.routes() if _route_wanted(r, indexes)]
        neighbours = [
            n
            for n in nl.neighbours()
            if n.index in indexes and n.state & netlink.NUD_PERMANENT and n.lladdr
        ]
    interfaces = tuple(
        NetInterface(link, tuple(a for a in addresses if a.index == link.index)) for link in links
    )
    return NetnsState(path, interfaces, tuple(routes), tuple(neighbours))


def discover(path: Path) -> NetnsState:
    """Read the pod netns at `path` (InvalidArgument if it does not exist)."""
    return run_in_netns(path, lambda: _read(path))
