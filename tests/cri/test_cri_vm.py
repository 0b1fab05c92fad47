"""A pod in a QEMU VM (TCG) through containerd's real CRI plugin: the `kata` handler with the
shim's default configuration ($KATA_CONF_FILE: the QEMU hypervisor and the test guest image).

One smoke scenario: RunPodSandbox, a container printing to its CRI log,
ExecSync, the pod IP on the guest's eth0, teardown leaving nothing behind (no QEMU,
shim, mount, pod netns).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.cri import CriRig
from kata_shim.devenv.criclient import CriClient
from kata_shim.proto import cri_pb2
from tests.cri.conftest import check_tools
from tests.cri.podkit import CHATTY, Pod, leftovers

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def vm_cri_rig(guest_image: Path) -> Iterator[CriRig]:
    check_tools()
    with CriRig(guest_image=guest_image) as rig:
        yield rig


def test_kata_vm_pod_smoke(vm_cri_rig: CriRig) -> None:
    with CriClient(vm_cri_rig.cri_address) as client:
        pod = Pod(vm_cri_rig, client, "kata", "vm")
        status = client.pod_status(pod.id)
        assert (status.state, status.runtime_handler) == (cri_pb2.SANDBOX_READY, "kata")
        container = pod.add("chatty", CHATTY)
        running = client.wait_container_state(container, cri_pb2.CONTAINER_RUNNING)
        assert running.state == cri_pb2.CONTAINER_RUNNING

        done = client.exec_sync(container, ["/bin/sh", "-c", "echo out-$((6*7)); uname -r; exit 3"])
        assert done.exit_code == 3
        out, kernel = done.stdout.decode().splitlines()
        assert out == "out-42"
        assert kernel != Path("/proc/sys/kernel/osrelease").read_text().strip()  # the guest's
        addr = client.exec_sync(container, ["/bin/ip", "-o", "-4", "addr", "show", "eth0"])
        pod_ip = status.network.ip  # CNI's address, carried into the VM (issue 15)
        assert pod_ip and f" {pod_ip}/" in addr.stdout.decode(), (pod_ip, addr)

        lines = pod.wait_log("chatty", 2, timeout=60)
        assert sorted(lines) == [("stderr", "F", "to-stderr"), ("stdout", "F", "to-stdout")]
        qemu = [pid for pid, argv in vm_cri_rig.leftovers() if "qemu-system" in argv]
        assert len(qemu) == 1, vm_cri_rig.leftovers()

        pod.teardown()
        assert leftovers(vm_cri_rig, client, [pod.id, container], timeout=30) == {}
