"""A recording stand-in for the networking calls of kata_shim.agent.client.AgentClient."""

from __future__ import annotations

from collections.abc import Iterable

from kata_shim.proto import types_pb2


class RecordingNetworkAgent:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    async def update_interface(self, interface: types_pb2.Interface) -> types_pb2.Interface:
        self.calls.append(("update_interface", interface))
        return interface

    async def update_routes(self, routes: Iterable[types_pb2.Route]) -> list[types_pb2.Route]:
        found = list(routes)
        self.calls.append(("update_routes", found))
        return found

    async def add_arp_neighbors(self, neighbors: Iterable[types_pb2.ARPNeighbor]) -> None:
        self.calls.append(("add_arp_neighbors", list(neighbors)))
