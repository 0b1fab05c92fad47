"""The agent's network calls' work: the pod network the shim discovered, applied in the guest.

UpdateInterface finds the NIC by MAC (waiting a little for virtio-net to probe),
renames it (moving a link that holds the wanted name out of the way), sets MTU
and IFF_NOARP, brings it up and sets its addresses. UpdateRoutes installs device
routes first, then gateway routes (a route already there is kept: idempotent),
and drops the other non-kernel main table routes of those devices. ListInterfaces
and ListRoutes report; AddARPNeighbors installs static neighbours.
pyroute2 (via kata_shim.network.netlink) does the netlink work, in the guest as
on the host: it is pure Python and the image builder copies it like protobuf.
guest/network.py imports this module on the first network RPC only: pyroute2's
import costs ~0.5 s on the host and more under TCG, on every VM boot otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable

from kata_shim.errors import InvalidArgument, NotFound
from kata_shim.network import netlink
from kata_shim.network.agentmsg import family as pb_family
from kata_shim.proto import types_pb2

__all__ = [
    "add_arp_neighbors",
    "list_interfaces",
    "list_routes",
    "update_interface",
    "update_routes",
]

NIC_WAIT = 20.0  # seconds UpdateInterface waits for a NIC with the MAC to appear
AF = {types_pb2.v4: socket.AF_INET, types_pb2.v6: socket.AF_INET6}


def _describe(nl: netlink.Netlink, link: netlink.Link) -> types_pb2.Interface:
    return types_pb2.Interface(
        device=link.name,
        name=link.name,
        IPAddresses=[
            types_pb2.IPAddress(
                family=pb_family(a.family), address=a.address, mask=str(a.prefixlen)
            )
            for a in nl.addresses()
            if a.index == link.index
        ],
        mtu=link.mtu,
        hwAddr=link.mac,
        type=link.kind or "",
        raw_flags=link.flags & netlink.IFF_NOARP,
    )


def _by_mac(nl: netlink.Netlink, mac: str) -> netlink.Link | None:
    return next((link for link in nl.links() if link.mac.lower() == mac.lower()), None)


def _rename(nl: netlink.Netlink, link: netlink.Link, name: str) -> None:
    holder = nl.link(name)
    if holder is not None and holder.index != link.index:
        nl.set_link(holder.index, name=f"kt{holder.index}")  # renamed later by its own update
    nl.set_link(link.index, name=name)


def _apply(nl: netlink.Netlink, link: netlink.Link, iface: types_pb2.Interface) -> None:
    name = iface.name or iface.device or link.name
    if name != link.name:
        nl.set_link(link.index, up=False)  # a link is renamed while down
        _rename(nl, link, name)
    if iface.mtu:
        nl.set_link(link.index, mtu=iface.mtu)
    nl.set_flags(link.index, iface.raw_flags & netlink.IFF_NOARP, netlink.IFF_NOARP)
    nl.set_link(link.index, up=True)  # before the addresses: IPv6 adds no prefix route if down
    for af in (socket.AF_INET, socket.AF_INET6):
        nl.flush_addresses(link.index, af)
    for addr in iface.IPAddresses:
        try:
            ip = ipaddress.ip_address(addr.address)
            prefix = int(addr.mask) if addr.mask else ip.max_prefixlen
        except ValueError:
            raise InvalidArgument(
                f"interface {name}: bad address {addr.address}/{addr.mask}"
            ) from None
        # IPv6: no DAD; the address was already checked in the pod netns, which keeps it
        nl.add_address(link.index, str(ip), prefix, nodad=ip.version == 6)


def update_interface(iface: types_pb2.Interface, wait: float = NIC_WAIT) -> types_pb2.Interface:
    """Configure the NIC whose MAC is iface.hwAddr (blocking; run it off the event loop)."""
    if not iface.hwAddr:
        raise InvalidArgument(f"UpdateInterface {iface.name or iface.device}: no hwAddr")
    deadline = time.monotonic() + wait
    with netlink.Netlink() as nl:
        link = _by_mac(nl, iface.hwAddr)
        while link is None and time.monotonic() < deadline:
            time.sleep(0.1)
            link = _by_mac(nl, iface.hwAddr)
        if link is None:
            raise NotFound(
                f"no network interface with MAC {iface.hwAddr} in the guest "
                "(is the virtio_net module in the guest image and the NIC on the VM?)"
            )
        _apply(nl, link, iface)
        now = nl.link_at(link.index)
        if now is None:
            raise NotFound(f"interface {iface.name} vanished while being configured")
        return _describe(nl, now)


def _to_route(route: types_pb2.Route, indexes: dict[str, int]) -> netlink.Route:
    if route.device and route.device not in indexes:
        raise NotFound(f"route {route.dest or 'default'}: no interface {route.device} in the guest")
    return netlink.Route(
        family=AF.get(route.family, socket.AF_INET),
        dest=route.dest,
        gateway=route.gateway,
        index=indexes.get(route.device, 0),
        source=route.source,
        scope=route.scope,
        flags=0,
        mtu=route.mtu,
    )


def _key(route: netlink.Route) -> tuple[int, str, str, int]:
    return route.family, route.dest, route.gateway, route.index


def update_routes(routes: Iterable[types_pb2.Route]) -> list[types_pb2.Route]:
    with netlink.Netlink() as nl:
        indexes = {link.name: link.index for link in nl.links()}
        wanted = sorted((_to_route(r, indexes) for r in routes), key=lambda r: bool(r.gateway))
        devices = {r.index for r in wanted}
        keys = {_key(r) for r in wanted}
        present = set()
        for old in nl.routes():
            present.add(_key(old))
            if old.index in devices and _key(old) not in keys and _managed(old):
                nl.delete_route(old)
        for route in wanted:
            if _key(route) not in present:
                nl.add_route(route)
        return _routes(nl)


def _managed(route: netlink.Route) -> bool:
    """Main-table unicast routes the kernel did not make for an address itself."""
    if route.type != netlink.RTN_UNICAST or route.proto == netlink.RTPROT_KERNEL:
        return False
    return not (route.dest and ipaddress.ip_network(route.dest, strict=False).is_link_local)


def _routes(nl: netlink.Netlink) -> list[types_pb2.Route]:
    names = {link.index: link.name for link in nl.links()}
    return [
        types_pb2.Route(
            dest=r.dest,
            gateway=r.gateway,
            device=names.get(r.index, ""),
            source=r.source,
            scope=r.scope,
            family=pb_family(r.family),
            flags=r.flags,
            mtu=r.mtu,
        )
        for r in nl.routes()
        if r.type == netlink.RTN_UNICAST
    ]


def list_routes() -> list[types_pb2.Route]:
    with netlink.Netlink() as nl:
        return _routes(nl)


def list_interfaces() -> list[types_pb2.Interface]:
    with netlink.Netlink() as nl:
        return [_describe(nl, link) for link in nl.links()]


def add_arp_neighbors(neighbours: Iterable[types_pb2.ARPNeighbor]) -> None:
    with netlink.Netlink() as nl:
        indexes = {link.name: link.index for link in nl.links()}
        for n in neighbours:
            if n.device not in indexes:
                raise NotFound(f"neighbour {n.toIPAddress.address}: no interface {n.device}")
            nl.replace_neighbour(
                netlink.Neighbour(
                    family=AF.get(n.toIPAddress.family, socket.AF_INET),
                    index=indexes[n.device],
                    address=n.toIPAddress.address,
                    lladdr=n.lladdr,
                    state=n.state,
                    flags=n.flags,
                )
            )
