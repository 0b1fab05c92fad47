"""Discovered netns state -> the agent's `types` messages, in Kata's Go runtime's shapes.

Interface: device = name = the CNI interface's name, mtu, hwAddr = its MAC,
IPAddresses {family v4/v6, address, mask = prefix length in decimal},
type = Kata's endpoint type ("virtual" for veth), raw_flags = IFF_NOARP if set.
Route: dest "a.b.c.d/len" ("" = default), gateway, device name, source
(preferred source), scope, family, flags, mtu. ARPNeighbor: toIPAddress
{family, address}, device, lladdr, state, flags. Routes are ordered device
routes (no gateway) first, so a gateway is always reachable when it is added.
"""

from __future__ import annotations

import socket

from kata_shim.network import netlink
from kata_shim.network.discovery import NetnsState
from kata_shim.network.models import BRIDGEABLE, Endpoint
from kata_shim.proto import types_pb2

__all__ = ["family", "interface", "ip_address", "neighbours", "routes"]


def family(af: int) -> types_pb2.IPFamily:
    return types_pb2.v6 if af == socket.AF_INET6 else types_pb2.v4


def ip_address(addr: netlink.Address) -> types_pb2.IPAddress:
    return types_pb2.IPAddress(
        family=family(addr.family), address=addr.address, mask=str(addr.prefixlen)
    )


def interface(endpoint: Endpoint) -> types_pb2.Interface:
    link = endpoint.interface.link
    return types_pb2.Interface(
        device=link.name,
        name=link.name,
        IPAddresses=[ip_address(a) for a in endpoint.interface.addresses],
        mtu=link.mtu,
        hwAddr=endpoint.mac,
        type=BRIDGEABLE.get(link.kind or "", "virtual"),
        raw_flags=link.flags & netlink.IFF_NOARP,
    )


def routes(state: NetnsState, endpoints: list[Endpoint]) -> list[types_pb2.Route]:
    """The routes of the carried interfaces, device routes first."""
    names = {e.interface.link.index: e.interface.name for e in endpoints}
    found = [
        types_pb2.Route(
            dest=r.dest,
            gateway=r.gateway,
            device=names[r.index],
            source=r.source,
            scope=r.scope,
            family=family(r.family),
            flags=r.flags,
            mtu=r.mtu,
        )
        for r in state.routes
        if r.index in names
    ]
    return sorted(found, key=lambda r: bool(r.gateway))


def neighbours(state: NetnsState, endpoints: list[Endpoint]) -> list[types_pb2.ARPNeighbor]:
    names = {e.interface.link.index: e.interface.name for e in endpoints}
    return [
        types_pb2.ARPNeighbor(
            toIPAddress=types_pb2.IPAddress(family=family(n.family), address=n.address),
            device=names[n.index],
            lladdr=n.lladdr,
            state=n.state,
            flags=n.flags,
        )
        for n in state.neighbours
        if n.index in names
    ]
