"""The agent's network RPCs and the guest's loopback; the work is in guest/netconf.py.

UpdateInterface, UpdateRoutes, ListInterfaces, ListRoutes and AddARPNeighbors run
guest/netconf.py (pyroute2) in a worker thread; it is imported on the first such
call, so a VM without a pod network never pays for pyroute2's import. All
containers share the agent's network namespace (the shim drops the spec's);
`loopback_up` brings its `lo` up at agent start with one SIOCSIFFLAGS ioctl
(no pyroute2 import on the boot path).
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import socket
import struct
from types import ModuleType

from google.protobuf import empty_pb2

from kata_shim.proto import agent_pb2, types_pb2
from kata_shim.ttrpc.service import RequestContext

__all__ = ["NetworkRpcs", "loopback_up"]

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ = "16sH22x"  # struct ifreq: name, flags (the union padded to 24 bytes)


def loopback_up(name: str = "lo") -> None:
    """Bring `name` (the loopback) up in this process's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        got = fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(IFREQ, name.encode(), 0))
        flags = struct.unpack(IFREQ, got)[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ, name.encode(), flags | IFF_UP))


def _netconf() -> ModuleType:
    return importlib.import_module("kata_shim.guest.netconf")


class NetworkRpcs:
    """The five grpc.AgentService network RPCs; mixed into guest.service.AgentService."""

    async def UpdateInterface(
        self, ctx: RequestContext, request: agent_pb2.UpdateInterfaceRequest
    ) -> types_pb2.Interface:
        return await asyncio.to_thread(_netconf().update_interface, request.interface)

    async def UpdateRoutes(
        self, ctx: RequestContext, request: agent_pb2.UpdateRoutesRequest
    ) -> agent_pb2.Routes:
        done = await asyncio.to_thread(_netconf().update_routes, list(request.routes.Routes))
        return agent_pb2.Routes(Routes=done)

    async def ListInterfaces(
        self, ctx: RequestContext, request: agent_pb2.ListInterfacesRequest
    ) -> agent_pb2.Interfaces:
        return agent_pb2.Interfaces(Interfaces=await asyncio.to_thread(_netconf().list_interfaces))

    async def ListRoutes(
        self, ctx: RequestContext, request: agent_pb2.ListRoutesRequest
    ) -> agent_pb2.Routes:
        return agent_pb2.Routes(Routes=await asyncio.to_thread(_netconf().list_routes))

    async def AddARPNeighbors(
        self, ctx: RequestContext, request: agent_pb2.AddARPNeighborsRequest
    ) -> empty_pb2.Empty:
        await asyncio.to_thread(_netconf().add_arp_neighbors, list(request.neighbors.ARPNeighbors))
        return empty_pb2.Empty()
