"""Pod networking between VMs and with more than one NIC, through a real containerd and
our shim (QEMU under TCG, issue 15).

Everything lives in network namespaces the test makes (kata_shim.devenv.cni, prefix
`net2-`): two VM pods on one CNI bridge reach each other by IP (busybox httpd in pod A,
a client in a container of pod B); a pod netns with two CNI interfaces, one of them
dual-stack, shows both NICs with their IPv4/IPv6 addresses and routes in the guest.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.cni import CniHost
from kata_shim.devenv.shim import KataRig
from tests.fakes.vmkeys import vm_keys
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status
from tests.integration.test_vm_network import _exec

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SERVE = "mkdir -p /run/www && echo net2-served > /run/www/f && exec httpd -f -p 8080 -h /run/www"

#: GET from inside the guest with nc (the rootfs's static busybox wget segfaults in the
#: guest too, status 139), retried while pod A's network comes up (TCG)
FETCH = (
    "for i in $(seq 60); do "
    "printf 'GET /f HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} 8080 | grep -q net2-served && exit 0; "
    "sleep 1; done; exit 1"
)


@pytest.fixture
def cni() -> Iterator[CniHost]:
    with CniHost(prefix="net2-") as host:
        yield host


@pytest.fixture
def vm_rig(guest_image: Path) -> Iterator[KataRig]:
    keys = vm_keys(guest_image, initrd=True)
    with KataRig(hypervisor="qemu", hypervisor_keys=keys, prefix="net2-") as rig:
        yield rig


def _start(rig: KataRig, task: str, script: str, netns: Path) -> None:
    args = rig.run_args(task, rig.sh(script), "-d", "--with-ns", f"network:{netns}")
    result = rig.ctr(*args, timeout=300)
    assert result.returncode == 0, _out(result) + rig.containerd.log_tail()
    wait_status(rig, task, "RUNNING", timeout=60)


def _stop(rig: KataRig, task: str) -> None:
    rig.ctr("task", "kill", "-s", "SIGKILL", task)
    wait_status(rig, task, "STOPPED", timeout=60)
    remove(rig, task)


def test_two_vm_pods_on_one_bridge_reach_each_other_by_ip(vm_rig: KataRig, cni: CniHost) -> None:
    bridge = cni.network(0)
    pod_a, pod_b = cni.new_pod("a"), cni.new_pod("b")
    a_ip = cni.attach(pod_a, bridge).ips[0].split("/")[0]
    b_ip = cni.attach(pod_b, bridge).ips[0].split("/")[0]
    server, client = vm_rig.id("srv"), vm_rig.id("cli")
    _start(vm_rig, server, SERVE, pod_a)
    _start(vm_rig, client, "sleep 600", pod_b)

    _exec(vm_rig, client, "get", FETCH.format(ip=a_ip))  # exits 0 only on the served body
    ping = _exec(vm_rig, server, "ping", f"ping -c1 -W10 {b_ip}")
    assert "1 packets received" in ping, ping

    _stop(vm_rig, client)
    _stop(vm_rig, server)
    assert_clean(vm_rig)


def test_two_nics_one_dual_stack_are_configured_in_the_guest(vm_rig: KataRig, cni: CniHost) -> None:
    pod = cni.new_pod("multi")
    eth0 = cni.attach(pod, cni.network(0, ipv6=True), "eth0")
    eth1 = cni.attach(pod, cni.network(1), "eth1")
    v4, v6 = eth0.ips
    assert ":" in v6, eth0.result
    (v4b,) = eth1.ips
    task = vm_rig.id("multi")
    _start(vm_rig, task, "sleep 600", pod)

    addr = _exec(vm_rig, task, "addr", "ip addr show eth0; ip addr show eth1")
    assert f"inet {v4}" in addr, addr
    assert f"inet6 {v6}" in addr, addr
    assert f"inet {v4b}" in addr, addr
    assert f"link/ether {eth1.mac.lower()}" in addr, addr
    routes = _exec(vm_rig, task, "routes", "ip route; echo ---; ip -6 route")
    v4_routes, v6_routes = routes.split("---")
    assert f"default via {eth0.network.gateway}" in v4_routes, routes
    assert f"{eth1.network.subnet} dev eth1" in v4_routes, routes
    subnet6 = ipaddress.ip_network(eth0.network.subnet6 or "")  # compressed, as `ip` prints it
    assert f"{subnet6} dev eth0" in v6_routes, routes
    assert "default via fd00:" in v6_routes, routes
    ping = _exec(vm_rig, task, "ping", f"ping -c1 -W10 {eth1.network.gateway}")
    assert "1 packets received" in ping, ping

    _stop(vm_rig, task)
    assert_clean(vm_rig)
