"""A sandbox's pod network: prepare before the VM boots, configure the guest, tear down.

    net = prepare(spec, model)            # discover + plumb; all or nothing
    qemu gets net.nics() (fd, MAC, MTU)   # then net.close_fds(): QEMU holds the taps
    await configure_guest(agent, net)     # UpdateInterface*, UpdateRoutes, AddARPNeighbors
    teardown(net)                         # idempotent; also after QEMU was SIGKILLed

`agent` is anything with the AgentClient networking methods (`NetworkAgent`).
Interfaces that appear in the netns after prepare are not hot-plugged (as in
Kata): `unplugged(net)` names them so the caller can log it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kata_shim.errors import InvalidArgument
from kata_shim.network import agentmsg, netlink
from kata_shim.network.discovery import NetnsState, discover, netns_path
from kata_shim.network.models import Endpoint, Model, attach, detach, parse_model
from kata_shim.network.netns import check_netns_path, is_own_netns, run_in_netns
from kata_shim.proto import types_pb2

__all__ = [
    "NetworkAgent",
    "Nic",
    "PodNetwork",
    "configure_guest",
    "prepare",
    "teardown",
    "unplugged",
]

log = logging.getLogger(__name__)


class NetworkAgent(Protocol):
    """The networking half of kata_shim.agent.client.AgentClient."""

    async def update_interface(self, interface: types_pb2.Interface) -> types_pb2.Interface: ...

    async def update_routes(self, routes: Iterable[types_pb2.Route]) -> list[types_pb2.Route]: ...

    async def add_arp_neighbors(self, neighbors: Iterable[types_pb2.ARPNeighbor]) -> None: ...


@dataclass(frozen=True, slots=True)
class Nic:
    """What the hypervisor needs for one guest NIC."""

    fd: int  # tap fd, to pass to QEMU (`-netdev tap,fd=`); the caller must not close it
    mac: str
    mtu: int
    name: str  # the pod-netns interface it carries (for logs and `kata-shim sandboxes`)
    tap: str = ""  # the tap / macvtap in the pod netns that `fd` opens


@dataclass(slots=True)
class PodNetwork:
    model: Model
    state: NetnsState | None = None  # None: no netns in the spec, or model none
    endpoints: list[Endpoint] = field(default_factory=list)

    def nics(self) -> list[Nic]:
        return [
            Nic(e.fd, e.mac, e.interface.link.mtu, e.interface.name, e.tap)
            for e in self.endpoints
            if e.fd is not None
        ]

    def close_fds(self) -> None:
        """Drop this process's tap fds (once QEMU holds them; the taps then live with QEMU)."""
        for endpoint in self.endpoints:
            endpoint.close_fd()

    def describe(self) -> list[dict[str, Any]]:
        """Per interface: name, MAC, addresses (for `kata-shim sandboxes` and /info)."""
        return [
            {
                "name": e.interface.name,
                "mac": e.mac,
                "tap": e.tap,
                "addresses": [f"{a.address}/{a.prefixlen}" for a in e.interface.addresses],
            }
            for e in self.endpoints
        ]


def _attach_all(state: NetnsState, model: Model) -> list[Endpoint]:
    endpoints: list[Endpoint] = []
    with netlink.Netlink() as nl:
        try:
            for n, iface in enumerate(state.interfaces):
                endpoints.append(attach(nl, iface, n, model))
                log.debug(
                    "netns %s: %s (%s) -> %s",
                    state.path,
                    iface.name,
                    iface.link.mac,
                    endpoints[-1].tap,
                )
        except BaseException:
            for endpoint in reversed(endpoints):
                detach(nl, endpoint)
            raise
    return endpoints


def prepare(spec: Mapping[str, Any], model: str | Model = Model.TCFILTER) -> PodNetwork:
    """Discover the spec's netns and join every interface to a tap (all or nothing)."""
    chosen = model if isinstance(model, Model) else parse_model(model)
    path = netns_path(spec)
    if path is None or chosen is Model.NONE:
        return PodNetwork(chosen)
    check_netns_path(path)
    if is_own_netns(path):
        raise InvalidArgument(
            f"network namespace {path} is the shim's own (the host's): only a pod's own netns "
            "is carried into the VM (give the sandbox a netns made for it, e.g. by CNI)"
        )
    state = discover(path)
    endpoints = run_in_netns(path, lambda: _attach_all(state, chosen))
    return PodNetwork(chosen, state, endpoints)


def teardown(net: PodNetwork) -> None:
    """Leave the netns as CNI made it. Idempotent; a netns already deleted is fine."""
    net.close_fds()
    if net.state is None or not net.endpoints or not net.state.path.exists():
        return
    path = net.state.path

    def undo() -> None:
        with netlink.Netlink() as nl:
            for endpoint in reversed(net.endpoints):
                detach(nl, endpoint)
                log.debug("netns %s: %s detached", path, endpoint.tap)

    run_in_netns(path, undo)


async def configure_guest(agent: NetworkAgent, net: PodNetwork) -> None:
    """Interfaces (found by MAC in the guest), then routes, then static neighbours."""
    if net.state is None or not net.endpoints:
        return
    for endpoint in net.endpoints:
        await agent.update_interface(agentmsg.interface(endpoint))
    routes = agentmsg.routes(net.state, net.endpoints)
    if routes:
        await agent.update_routes(routes)
    neighbours = agentmsg.neighbours(net.state, net.endpoints)
    if neighbours:
        await agent.add_arp_neighbors(neighbours)


def unplugged(net: PodNetwork) -> list[str]:
    """Interfaces now in the netns that the VM did not get (not hot-plugged, as in Kata)."""
    if net.state is None:
        return []
    known = {e.interface.name for e in net.endpoints}
    return [i.name for i in discover(net.state.path).interfaces if i.name not in known]
