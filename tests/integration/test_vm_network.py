"""Pod networking through a real containerd and our shim: a CNI pod netns carried into a
QEMU VM (TCG) — tcfilter taps, virtio-net, the guest configured by the agent (issue 15).

Everything lives in network namespaces the test makes (kata_shim.devenv.cni, prefix
`wire-`): the CNI bridge and the client in the test's "host" netns, the pod's veth in
the pod netns that `ctr run --with-ns network:<path>` hands the shim. A busybox httpd in
the VM serves a file to the host netns; after kill -9 and delete, or after QEMU was
SIGKILLed (tasks exit 255), the pod netns holds exactly what CNI made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.cli.sandboxes import list_sandboxes
from kata_shim.devenv.cni import CniHost
from kata_shim.devenv.shim import KataRig
from kata_shim.metrics.endpoint import SOCKET_NAME
from tests.fakes.vmkeys import vm_keys
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status
from tests.integration.test_vm_containerd import kill_and_collect_exits, qemu_processes
from tests.metrics.test_shim_endpoint import get
from tests.network.conftest import Pod

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

SERVE = "mkdir -p /run/www && echo wire-served > /run/www/f && exec httpd -f -p 8080 -h /run/www"


@pytest.fixture
def net_pod() -> Iterator[Pod]:
    with CniHost(prefix="wire-") as host:
        netns = host.new_pod("pod")
        yield Pod(host, netns, host.attach(netns, host.network(0)))


@pytest.fixture
def vm_rig(guest_image: Path) -> Iterator[KataRig]:
    keys = vm_keys(guest_image, initrd=True)
    with KataRig(hypervisor="qemu", hypervisor_keys=keys, prefix="wire-") as rig:
        yield rig


def _exec(rig: KataRig, task: str, exec_id: str, script: str) -> str:
    done = rig.ctr("task", "exec", "--exec-id", exec_id, task, *rig.sh(script), timeout=120)
    assert done.returncode == 0, _out(done)
    return done.stdout.decode()


def test_httpd_in_the_vm_serves_the_host_netns_and_delete_restores_the_pod_netns(
    vm_rig: KataRig, net_pod: Pod
) -> None:
    before = net_pod.snapshot()
    pod_ip = net_pod.eth0.ips[0].split("/")[0]
    task = vm_rig.id("http")
    args = vm_rig.run_args(task, vm_rig.sh(SERVE), "-d", "--with-ns", f"network:{net_pod.netns}")
    result = vm_rig.ctr(*args, timeout=240)
    assert result.returncode == 0, _out(result) + vm_rig.containerd.log_tail()
    wait_status(vm_rig, task, "RUNNING", timeout=60)
    plumbed = net_pod.sh("ip", "-o", "link")
    assert "tap0_kata" in plumbed, plumbed

    addr = _exec(vm_rig, task, "addr", "ip addr show eth0; ip route; ps")
    assert f"inet {net_pod.eth0.ips[0]}" in addr, addr
    assert f"link/ether {net_pod.eth0.mac.lower()}" in addr, addr
    assert net_pod.http_get(f"http://{pod_ip}:8080/f") == "wire-served\n", addr
    gateway = net_pod.eth0.network.gateway
    ping = _exec(vm_rig, task, "ping", f"ping -c1 -W10 {gateway}")
    assert "1 packets received" in ping, ping

    status, info = get(str(vm_rig.state_dir / task / SOCKET_NAME), "/info")
    assert status == 200, info
    (eth0,) = json.loads(info)["interfaces"]
    assert (eth0["name"], eth0["mac"], eth0["tap"]) == ("eth0", net_pod.eth0.mac, "tap0_kata")
    assert eth0["addresses"] == [net_pod.eth0.ips[0]]
    (listed,) = [e for e in list_sandboxes(vm_rig.state_dir) if e.id == task]
    assert listed.interfaces == [eth0]  # `kata-shim sandboxes`

    vm_rig.ctr("task", "kill", "-s", "SIGKILL", task)
    wait_status(vm_rig, task, "STOPPED", timeout=60)
    remove(vm_rig, task)
    assert_clean(vm_rig)  # the shim (and with it the sandbox teardown) is done
    assert net_pod.snapshot() == before


def test_qemu_sigkill_ends_the_task_with_255_and_teardown_restores_the_pod_netns(
    vm_rig: KataRig, net_pod: Pod
) -> None:
    before = net_pod.snapshot()
    task = vm_rig.id("kill9")
    args = vm_rig.run_args(
        task, vm_rig.sh("sleep 600"), "-d", "--with-ns", f"network:{net_pod.netns}"
    )
    result = vm_rig.ctr(*args, timeout=240)
    assert result.returncode == 0, _out(result) + vm_rig.containerd.log_tail()
    wait_status(vm_rig, task, "RUNNING", timeout=60)
    assert "tap0_kata" in net_pod.sh("ip", "-o", "link")
    (qemu,) = qemu_processes(vm_rig)
    statuses = kill_and_collect_exits(vm_rig, qemu, [task])
    assert statuses.get(task) == 255, statuses
    remove(vm_rig, task)
    assert_clean(vm_rig)
    assert net_pod.snapshot() == before


def test_a_missing_netns_fails_create_naming_the_fix_and_leaves_nothing(vm_rig: KataRig) -> None:
    missing = f"/run/netns/{vm_rig.marker}-missing"
    task = vm_rig.id("nons")
    args = vm_rig.run_args(task, vm_rig.sh("true"), "--rm", "--with-ns", f"network:{missing}")
    result = vm_rig.ctr(*args, timeout=120)
    assert result.returncode != 0, _out(result)
    assert f"network namespace {missing} does not exist" in _out(result), _out(result)
    assert "before the sandbox starts" in _out(result)
    vm_rig.ctr("container", "delete", task)
    assert_clean(vm_rig)
    assert not (vm_rig.state_dir / task).exists()
