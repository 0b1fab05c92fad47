"""kata_shim/devenv/cni.py: Debian's CNI plugins in a test-owned host netns, cleaned up always."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kata_shim.devenv.cni import CniError, CniHost, CniNetwork

pytestmark = pytest.mark.integration


def _netns_names() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def _root_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_bridge_network_gives_the_pod_an_address_and_a_gateway() -> None:
    root_before = _root_links()
    with CniHost() as host:
        net = host.network(0, ipv6=True)
        pod = host.new_pod("a")
        att = host.attach(pod, net)
        assert att.ips[0].startswith(net.subnet.rsplit(".", 1)[0] + ".")
        assert any(":" in ip for ip in att.ips)
        pod_links = host.in_pod(pod, "ip", "-o", "link").stdout
        assert att.mac in pod_links
        assert net.bridge in host.run("ip", "-o", "link").stdout
        assert f"default via {net.gateway}" in host.in_pod(pod, "ip", "route").stdout
        ping = host.in_pod(pod, "busybox", "ping", "-c1", "-W5", net.gateway)
        assert "1 packets received" in ping.stdout
        names = {host.netns.name, pod.name}
        assert names <= _netns_names()
        work = host.work
    assert not names & _netns_names()
    assert not work.exists()
    assert net.bridge not in _root_links()
    assert _root_links() == root_before  # nothing was added to the root namespace


def test_two_networks_two_interfaces() -> None:
    with CniHost() as host:
        pod = host.new_pod("p")
        first = host.attach(pod, host.network(0))
        second = host.attach(pod, host.network(1), ifname="eth1")
        assert first.mac != second.mac
        brief = host.in_pod(pod, "ip", "-br", "addr").stdout
        assert first.ips[0] in brief and second.ips[0] in brief
        host.detach(second)
        assert "eth1" not in host.in_pod(pod, "ip", "-o", "link").stdout
        host.detach(second)  # CNI DEL is idempotent


def test_failure_leaves_nothing_behind() -> None:
    before = _netns_names()
    host = CniHost()
    host.start()
    work = host.work
    try:
        pod = host.new_pod("bad")
        bad = CniNetwork(name=f"{host.marker}-bad", bridge="brbad", subnet="10.999.0.0/24")
        with pytest.raises(CniError, match="bridge ADD"):
            host.attach(pod, bad)
    finally:
        host.close()
    assert _netns_names() == before
    assert not work.exists()
    assert not Path("/run/netns", host.marker).exists()
