"""kata_shim.guest.network, run on the host inside a netns the test owns (the "guest").

The shim side discovers a real CNI pod (two networks, IPv4 + IPv6); the "guest" netns
holds a veth pair whose ends carry the pod interfaces' MACs under swapped names, as a
VM's virtio NICs would. The agent calls must make the guest look like the pod.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from kata_shim.devenv.cni import CniHost
from kata_shim.errors import NotFound
from kata_shim.guest import netconf, network
from kata_shim.network import agentmsg, discovery
from kata_shim.network.models import Endpoint, Model
from kata_shim.network.netns import run_in_netns
from kata_shim.proto import agent_pb2, types_pb2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
T = TypeVar("T")


def _in(path: Path, fn: Callable[[], T]) -> T:
    return run_in_netns(path, fn)


@pytest.fixture
def pod_and_guest(cni_host: CniHost) -> tuple[CniHost, Path, Path]:
    pod = cni_host.new_pod("pod")
    cni_host.attach(pod, cni_host.network(0, ipv6=True))
    cni_host.attach(pod, cni_host.network(1), ifname="eth1")
    guest = cni_host.new_pod("guest")
    return cni_host, pod, guest


@pytest.fixture
def cni_host() -> Iterator[CniHost]:
    with CniHost() as host:
        yield host


def routes(state: discovery.NetnsState) -> list[tuple[int, str, str, str]]:
    """Routes by device name (interface indexes differ between namespaces)."""
    names = {i.link.index: i.name for i in state.interfaces}
    return sorted((r.family, r.dest, r.gateway, names[r.index]) for r in state.routes)


def _guest_nics(host: CniHost, guest: Path, state: discovery.NetnsState) -> None:
    eth0, eth1 = state.interfaces
    host.in_pod(guest, "ip", "link", "add", "eth0", "address", eth1.link.mac, "type", "veth",
                "peer", "name", "eth1", "address", eth0.link.mac)  # fmt: skip


def test_the_guest_becomes_the_pod(pod_and_guest: tuple[CniHost, Path, Path]) -> None:
    host, pod, guest = pod_and_guest
    state = discovery.discover(pod)
    _guest_nics(host, guest, state)
    endpoints = [
        Endpoint(i, Model.TCFILTER, f"tap{n}_kata", None) for n, i in enumerate(state.interfaces)
    ]
    host.in_pod(pod, "ip", "neigh", "add", "10.1.2.3", "lladdr", "02:00:00:00:00:01", "dev",
                "eth1", "nud", "permanent")  # fmt: skip
    state = discovery.discover(pod)

    def configure() -> list[types_pb2.Interface]:
        done = [netconf.update_interface(agentmsg.interface(e)) for e in endpoints]
        netconf.update_routes(agentmsg.routes(state, endpoints))
        netconf.add_arp_neighbors(agentmsg.neighbours(state, endpoints))
        return done

    done = _in(guest, configure)
    assert [(i.name, i.hwAddr) for i in done] == [(i.name, i.link.mac) for i in state.interfaces]
    for iface, want in zip(done, state.interfaces, strict=True):
        got = {(a.address, a.mask) for a in iface.IPAddresses if not a.address.startswith("fe80")}
        assert got == {(a.address, str(a.prefixlen)) for a in want.addresses}
    again = discovery.discover(guest)
    assert [(i.name, i.link.mac, i.link.mtu) for i in again.interfaces] == [
        (i.name, i.link.mac, i.link.mtu) for i in state.interfaces
    ]
    assert routes(again) == routes(state)
    assert [(n.address, n.lladdr) for n in again.neighbours] == [("10.1.2.3", "02:00:00:00:00:01")]
    listed = _in(guest, netconf.list_routes)
    assert any(r.gateway == host.network(0).gateway and r.device == "eth0" for r in listed)
    assert any(r.family == types_pb2.v6 and r.gateway for r in listed)
    # idempotent: the shim may retry after a lost reply
    _in(guest, lambda: netconf.update_routes(agentmsg.routes(state, endpoints)))
    assert routes(discovery.discover(guest)) == routes(state)


def test_rpc_handlers_and_loopback(cni_host: CniHost) -> None:
    guest = cni_host.new_pod("guest")
    mac = "02:11:22:33:44:55"
    cni_host.in_pod(guest, "ip", "link", "add", "ens3", "address", mac, "type", "veth",
                    "peer", "name", "ens3p")  # fmt: skip
    rpcs = network.NetworkRpcs()
    iface = types_pb2.Interface(
        device="eth0", name="eth0", hwAddr=mac.upper(), mtu=1400,
        IPAddresses=[types_pb2.IPAddress(family=types_pb2.v4, address="10.5.0.7", mask="24")],
    )  # fmt: skip
    route = types_pb2.Route(dest="10.6.0.0/16", gateway="10.5.0.1", device="eth0")

    async def calls() -> tuple[object, ...]:
        got = await rpcs.UpdateInterface(None, agent_pb2.UpdateInterfaceRequest(interface=iface))  # type: ignore[arg-type]
        req = agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=[route]))
        routes = await rpcs.UpdateRoutes(None, req)  # type: ignore[arg-type]
        ifaces = await rpcs.ListInterfaces(None, agent_pb2.ListInterfacesRequest())  # type: ignore[arg-type]
        return got, routes, ifaces

    def run() -> tuple[object, ...]:
        network.loopback_up()
        return asyncio.run(calls())

    got, routes, ifaces = _in(guest, run)
    assert got.name == "eth0" and got.mtu == 1400  # type: ignore[attr-defined]
    assert any(r.dest == "10.6.0.0/16" and r.gateway == "10.5.0.1" for r in routes.Routes)  # type: ignore[attr-defined]
    names = {i.name for i in ifaces.Interfaces}  # type: ignore[attr-defined]
    assert {"lo", "eth0", "ens3p"} <= names
    assert "UP" in cni_host.in_pod(guest, "ip", "-o", "link", "show", "lo").stdout
    ping = cni_host.in_pod(guest, "busybox", "ping", "-c1", "-W2", "127.0.0.1")
    assert "1 packets received" in ping.stdout
    with pytest.raises(NotFound, match="no network interface with MAC 02:00:00:00:00:99"):
        _in(guest, lambda: netconf.update_interface(
            types_pb2.Interface(name="eth9", hwAddr="02:00:00:00:00:99"), wait=0.2))  # fmt: skip
    with pytest.raises(NotFound, match="no interface eth7"):
        _in(
            guest,
            lambda: netconf.update_routes([types_pb2.Route(dest="10.0.0.0/8", device="eth7")]),
        )


def test_agent_start_does_not_import_pyroute2() -> None:
    """pyroute2's import is slow under TCG: only the first network RPC pays for it."""
    probe = "import sys, kata_shim.guest.main; print('pyroute2' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
