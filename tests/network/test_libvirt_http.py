"""Pod networking through the libvirt backend (issue 15, must-show 4): a CNI pod netns carried
into a libvirt domain's QEMU (TCG) by the emulator wrapper (sandbox/libvirt/nicpass.py).

Private containerd + our shim with `[hypervisor.libvirt]`, libvirtd/virtlogd started by
hand (kata_shim.devenv.libvirtd), everything network in namespaces the test makes
(kata_shim.devenv.cni, prefix `libvirtnet-`). A busybox httpd in the VM container serves
a file to the test's host netns; the domain XML has no `<interface>`, the NIC reaches
QEMU's argv through the wrapper with the veth's MAC. Then QEMU is SIGKILLed: the task
exits 255 and teardown leaves the pod netns exactly as CNI made it (`ip -d link`,
addresses, qdiscs, ingress filters).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.cli.sandboxes import list_sandboxes
from kata_shim.devenv.cni import CniHost
from kata_shim.devenv.libvirtd import LibvirtDaemons
from kata_shim.devenv.shim import KataRig
from kata_shim.metrics.endpoint import SOCKET_NAME
from tests.fakes.vmkeys import vm_keys
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status
from tests.integration.test_vm_containerd import kill_and_collect_exits
from tests.metrics.test_shim_endpoint import get
from tests.network.conftest import Pod

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(480)]

SERVE = (
    "mkdir -p /run/www && echo libvirtnet-served > /run/www/f && exec httpd -f -p 8080 -h /run/www"
)
VIRSH = ["virsh", "-c", "qemu:///system"]


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[LibvirtDaemons]:
    missing = [b for b in ("libvirtd", "virtlogd", "virsh") if shutil.which(b) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/dev.sh setup")
    daemons = LibvirtDaemons()  # a lease on the host's daemons (devenv/libvirtd.py)
    daemons.start()
    try:
        yield daemons
    finally:
        daemons.stop()
        shutil.rmtree(daemons.work, ignore_errors=True)


@pytest.fixture
def net_pod() -> Iterator[Pod]:
    with CniHost(prefix="libvirtnet-") as host:
        netns = host.new_pod("pod")
        yield Pod(host, netns, host.attach(netns, host.network(0)))


@pytest.fixture
def lv_rig(guest_image: Path, libvirtd: LibvirtDaemons) -> Iterator[KataRig]:
    keys = vm_keys(guest_image, initrd=True)
    with KataRig(hypervisor="libvirt", hypervisor_keys=keys, prefix="libvirtnet-") as rig:
        try:
            yield rig
        finally:
            for task in rig.ids:  # a domain left by a failed run: destroy it (by name)
                subprocess.run([*VIRSH, "destroy", f"kata-shim-{task}"], capture_output=True)


def _exec(rig: KataRig, task: str, exec_id: str, script: str) -> str:
    done = rig.ctr("task", "exec", "--exec-id", exec_id, task, *rig.sh(script), timeout=120)
    assert done.returncode == 0, _out(done)
    return done.stdout.decode()


def _domain(task: str) -> tuple[str, int, list[str]]:
    """(domain XML, QEMU pid, QEMU argv) of the task's libvirt domain."""
    name = f"kata-shim-{task}"
    xml = subprocess.run([*VIRSH, "dumpxml", name], capture_output=True, text=True, check=True)
    listed = subprocess.run([*VIRSH, "domiflist", name], capture_output=True, text=True)
    assert listed.returncode == 0 and "tap" not in listed.stdout, listed  # libvirt knows none
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    return xml.stdout, pid, argv


def _check_served(rig: KataRig, task: str, pod: Pod) -> None:
    pod_ip = pod.eth0.ips[0].split("/")[0]
    addr = _exec(rig, task, "addr", "ip addr show eth0; ip route")
    assert f"inet {pod.eth0.ips[0]}" in addr, addr
    assert f"link/ether {pod.eth0.mac.lower()}" in addr, addr
    assert pod.http_get(f"http://{pod_ip}:8080/f") == "libvirtnet-served\n", addr
    ping = _exec(rig, task, "ping", f"ping -c1 -W10 {pod.eth0.network.gateway}")
    assert "1 packets received" in ping, ping


def _check_reported(rig: KataRig, task: str, pod: Pod) -> None:
    status, info = get(str(rig.state_dir / task / SOCKET_NAME), "/info")
    assert status == 200, info
    (eth0,) = json.loads(info)["interfaces"]
    assert (eth0["name"], eth0["mac"], eth0["tap"]) == ("eth0", pod.eth0.mac, "tap0_kata")
    assert eth0["addresses"] == [pod.eth0.ips[0]]
    (listed,) = [e for e in list_sandboxes(rig.state_dir) if e.id == task]
    assert listed.interfaces == [eth0]  # `kata-shim sandboxes`


def test_httpd_in_a_libvirt_vm_serves_the_host_netns_and_qemu_sigkill_restores_the_netns(
    lv_rig: KataRig, net_pod: Pod
) -> None:
    before = net_pod.snapshot()
    task = lv_rig.id("http")
    args = lv_rig.run_args(task, lv_rig.sh(SERVE), "-d", "--with-ns", f"network:{net_pod.netns}")
    result = lv_rig.ctr(*args, timeout=300)
    assert result.returncode == 0, _out(result) + lv_rig.containerd.log_tail()
    wait_status(lv_rig, task, "RUNNING", timeout=60)
    assert "tap0_kata" in net_pod.sh("ip", "-o", "link")

    xml, qemu, argv = _domain(task)
    assert "<interface" not in xml and "KATA_SHIM_NICS" in xml, xml
    # appended by the wrapper after libvirt's arguments; a JSON device like libvirt's own
    assert argv[-4] == "-netdev" and argv[-3].startswith("tap,id=net0,fd="), argv
    device = {"driver": "virtio-net-pci", "netdev": "net0", "mac": net_pod.eth0.mac}
    assert argv[-2] == "-device" and json.loads(argv[-1]) == device, argv
    _check_served(lv_rig, task, net_pod)
    _check_reported(lv_rig, task, net_pod)

    statuses = kill_and_collect_exits(lv_rig, qemu, [task])
    assert statuses.get(task) == 255, statuses
    remove(lv_rig, task)
    assert_clean(lv_rig)  # the shim (and with it the sandbox teardown) is done
    assert net_pod.snapshot() == before
