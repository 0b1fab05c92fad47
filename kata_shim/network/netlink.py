"""The typed wrapper over pyroute2's IPRoute: the only place that touches its messages.

pyroute2 ships no type information; everything leaves this module as the
frozen dataclasses below. Used on the host (in the pod netns) and in the guest.
Works with pyroute2 0.7.2 (Debian 12) and later 0.7.x.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

__all__ = [
    "ETH_P_ALL",
    "IFF_NOARP",
    "IFF_UP",
    "MAIN_TABLE",
    "NUD_PERMANENT",
    "Address",
    "Link",
    "Neighbour",
    "Netlink",
    "NetlinkError",
    "Route",
]

ETH_P_ALL = 0x0003
IFF_UP = 0x1
IFF_NOARP = 0x80
IFF_LOOPBACK = 0x8
NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02
MAIN_TABLE = 254
RTN_UNICAST = 1
RTPROT_KERNEL = 2
INGRESS_PARENT = 0xFFFF0000
FILTER_PRIO = 49152  # what `tc filter add` picks for the first filter
FILTER_CLASSID = 0x10001  # 1:1, unused on ingress but required by u32


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    mac: str
    mtu: int
    kind: str | None  # IFLA_INFO_KIND: veth, macvlan, tun, bridge, ... None: a physical NIC
    flags: int
    txqlen: int = 0

    @property
    def loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)


@dataclass(frozen=True, slots=True)
class Address:
    index: int
    family: int  # socket.AF_INET / AF_INET6
    address: str
    prefixlen: int
    scope: int


@dataclass(frozen=True, slots=True)
class Route:
    family: int
    dest: str  # "" for a default route, else "10.0.0.0/24"
    gateway: str
    index: int  # output interface, 0 if none
    source: str
    scope: int
    flags: int
    mtu: int
    table: int = MAIN_TABLE
    type: int = RTN_UNICAST
    proto: int = 0  # RTPROT_KERNEL (2): made by the kernel for an address


@dataclass(frozen=True, slots=True)
class Neighbour:
    family: int
    index: int
    address: str
    lladdr: str
    state: int
    flags: int


def _link(msg: Any) -> Link:
    return Link(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME"),
        mac=msg.get_attr("IFLA_ADDRESS") or "",
        mtu=msg.get_attr("IFLA_MTU") or 0,
        kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
        flags=msg["flags"],
        txqlen=msg.get_attr("IFLA_TXQLEN") or 0,
    )


def _route(msg: Any) -> Route:
    dst = msg.get_attr("RTA_DST")
    metrics = msg.get_attr("RTA_METRICS")
    mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
    return Route(
        family=msg["family"],
        dest=f"{dst}/{msg['dst_len']}" if dst else "",
        gateway=msg.get_attr("RTA_GATEWAY") or "",
        index=msg.get_attr("RTA_OIF") or 0,
        source=msg.get_attr("RTA_PREFSRC") or "",
        scope=msg["scope"],
        flags=msg["flags"],
        mtu=mtu or 0,
        table=msg.get_attr("RTA_TABLE") or msg["table"],
        type=msg["type"],
        proto=msg["proto"],
    )


class Netlink:
    """One rtnetlink socket, bound to the network namespace it was opened in."""

    def __init__(self) -> None:
        self._ipr = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reading -------------------------------------------------------------------
    def links(self) -> list[Link]:
        return [_link(m) for m in self._ipr.get_links()]

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links() if link.name == name), None)

    def link_at(self, index: int) -> Link | None:
        return next((link for link in self.links() if link.index == index), None)

    def addresses(self) -> list[Address]:
        return [
            Address(m["index"], m["family"], m.get_attr("IFA_ADDRESS"), m["prefixlen"], m["scope"])
            for m in self._ipr.get_addr()
        ]

    def routes(self) -> list[Route]:
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            found += [_route(m) for m in self._ipr.get_routes(family=family, table=MAIN_TABLE)]
        return [r for r in found if r.table == MAIN_TABLE]

    def neighbours(self) -> list[Neighbour]:
        return [
            Neighbour(
                family=m["family"],
                index=m["ifindex"],
                address=m.get_attr("NDA_DST") or "",
                lladdr=m.get_attr("NDA_LLADDR") or "",
                state=m["state"],
                flags=m["flags"],
            )
            for m in self._ipr.get_neighbours()
        ]

    def ingress_filters(self, index: int) -> list[str]:
        """Kinds of the filters on the ingress qdisc of link `index` (empty: none)."""
        try:
            found = self._ipr.get_filters(index=index, parent=INGRESS_PARENT)
        except NetlinkError as exc:
            if exc.code in (errno.EINVAL, errno.ENOENT):
                return []
            raise
        return [m.get_attr("TCA_KIND") for m in found if m.get_attr("TCA_OPTIONS")]

    def has_ingress_qdisc(self, index: int) -> bool:
        return any(m.get_attr("TCA_KIND") == "ingress" for m in self._ipr.get_qdiscs(index=index))

    # links ---------------------------------------------------------------------
    def set_link(
        self,
        index: int,
        *,
        name: str | None = None,
        mtu: int | None = None,
        up: bool | None = None,
        txqlen: int | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if txqlen is not None:
            changes["txqlen"] = txqlen
        if name is not None:
            changes["ifname"] = name
        if mtu is not None:
            changes["mtu"] = mtu
        if up is not None:
            changes["state"] = "up" if up else "down"
        if changes:
            self._ipr.link("set", index=index, **changes)

    def set_mac(self, index: int, mac: str) -> None:
        self._ipr.link("set", index=index, address=mac)

    def set_flags(self, index: int, flags: int, mask: int) -> None:
        self._ipr.link("set", index=index, flags=flags, change=mask)

    def add_macvtap(self, name: str, parent: int, mac: str, mtu: int) -> int:
        self._ipr.link(
            "add",
            ifname=name,
            kind="macvtap",
            link=parent,
            macvtap_mode="bridge",
            address=mac,
            mtu=mtu,
        )
        return int(self._ipr.link_lookup(ifname=name)[0])

    def delete_link(self, name: str) -> bool:
        """Delete link `name`; False if there was none."""
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            return False
        try:
            self._ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
            return False
        return True

    # tc ------------------------------------------------------------------------
    def redirect_ingress(self, src: int, dst: int) -> None:
        """Everything arriving on `src` leaves through `dst` (ingress qdisc + u32 + mirred)."""
        self._ipr.tc("add", "ingress", index=src)
        self._ipr.tc(
            "add-filter",
            "u32",
            index=src,
            parent=INGRESS_PARENT,
            protocol=ETH_P_ALL,
            prio=FILTER_PRIO,
            target=FILTER_CLASSID,
            keys=["0x0/0x0+0"],
            action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": dst},
        )

    def delete_ingress(self, index: int) -> bool:
        """Remove the ingress qdisc (and with it its filters); False if there was none."""
        try:
            self._ipr.tc("del", "ingress", index=index)
        except NetlinkError as exc:
            if exc.code in (errno.EINVAL, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True

    # addresses, routes, neighbours ---------------------------------------------
    def add_address(self, index: int, address: str, prefixlen: int, *, nodad: bool = False) -> None:
        extra = {"flags": IFA_F_NODAD} if nodad else {}
        try:
            self._ipr.addr("add", index=index, address=address, prefixlen=prefixlen, **extra)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    def flush_addresses(self, index: int, family: int) -> None:
        for addr in self.addresses():
            if addr.index == index and addr.family == family and addr.scope == 0:
                self._ipr.addr("del", index=index, address=addr.address, prefixlen=addr.prefixlen)

    def add_route(self, route: Route) -> None:
        """Add `route` next to any other of the same prefix (two default routes via two
        interfaces, as CNI makes them); an identical route already there is fine."""
        spec: dict[str, Any] = {"family": route.family, "table": MAIN_TABLE, "scope": route.scope}
        if route.dest:
            spec["dst"] = route.dest
        else:
            spec["dst"] = "0.0.0.0/0" if route.family == socket.AF_INET else "::/0"
        if route.gateway:
            spec["gateway"] = route.gateway
        if route.index:
            spec["oif"] = route.index
        if route.source:
            spec["prefsrc"] = route.source
        if route.mtu:
            spec["metrics"] = {"attrs": [["RTAX_MTU", route.mtu]]}
        try:
            self._ipr.route("append", **spec)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    def delete_route(self, route: Route) -> None:
        spec: dict[str, Any] = {"family": route.family, "table": MAIN_TABLE}
        spec["dst"] = route.dest or ("0.0.0.0/0" if route.family == socket.AF_INET else "::/0")
        if route.gateway:
            spec["gateway"] = route.gateway
        if route.index:
            spec["oif"] = route.index
        try:
            self._ipr.route("del", **spec)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT):
                raise

    def replace_neighbour(self, neigh: Neighbour) -> None:
        self._ipr.neigh(
            "replace",
            family=neigh.family,
            ifindex=neigh.index,
            dst=neigh.address,
            lladdr=neigh.lladdr,
            state=neigh.state or NUD_PERMANENT,
            flags=neigh.flags,
        )
