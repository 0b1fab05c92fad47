"""kata_shim.network.discovery: the spec's netns path and what CNI put in it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kata_shim.errors import InvalidArgument
from kata_shim.network import discovery, netlink
from tests.network.conftest import Pod


def _spec(*namespaces: dict[str, str]) -> dict[str, object]:
    return {"linux": {"namespaces": list(namespaces)}}


def test_netns_path_from_the_spec() -> None:
    path = "/var/run/netns/cni-1"
    assert discovery.netns_path(_spec({"type": "pid"}, {"type": "network", "path": path})) == Path(
        path
    )
    assert discovery.netns_path(_spec({"type": "network"})) is None  # a new, empty netns
    assert discovery.netns_path(_spec({"type": "pid"})) is None
    assert discovery.netns_path({}) is None
    with pytest.raises(InvalidArgument, match="not absolute"):
        discovery.netns_path(_spec({"type": "network", "path": "netns/x"}))


def test_missing_netns_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        discovery.discover(tmp_path / "gone")
    (tmp_path / "plain").write_text("")
    with pytest.raises(InvalidArgument, match="cannot enter network namespace"):
        discovery.discover(tmp_path / "plain")


@pytest.mark.integration
def test_discovers_interfaces_addresses_routes_and_static_neighbours(pod: Pod) -> None:
    second = pod.host.attach(pod.netns, pod.host.network(1), ifname="eth1")
    pod.sh("ip", "neigh", "add", "10.1.2.3", "lladdr", "02:00:00:00:00:01", "dev", "eth0",
           "nud", "permanent")  # fmt: skip
    state = discovery.discover(pod.netns)
    names = [i.name for i in state.interfaces]
    assert names == ["eth0", "eth1"]  # no lo
    eth0, eth1 = state.interfaces
    assert eth0.link.mac == pod.eth0.mac and eth1.link.mac == second.mac
    assert eth0.link.kind == "veth" and eth0.link.mtu == 1500
    cidrs = sorted(f"{a.address}/{a.prefixlen}" for a in eth0.addresses)
    assert cidrs == sorted(pod.eth0.ips)  # IPv4 + IPv6, no fe80::
    gateways = {(r.family, r.gateway, r.index) for r in state.routes if r.gateway}
    assert (socket.AF_INET, pod.host.network(0).gateway, eth0.link.index) in gateways
    assert any(r.family == socket.AF_INET6 and not r.dest for r in state.routes)
    assert not any(r.dest.startswith("fe80") for r in state.routes)
    assert [(n.address, n.lladdr, n.index) for n in state.neighbours] == [
        ("10.1.2.3", "02:00:00:00:00:01", eth0.link.index)
    ]
    assert all(n.state & netlink.NUD_PERMANENT for n in state.neighbours)
