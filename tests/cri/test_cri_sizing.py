"""VM sizing through containerd's real CRI plugin (the `kata` handler, QEMU under TCG).

The rig passes the pod annotations `io.katacontainers.*` and
`com.github.containers.virtcontainers.*` to our shim (`pod_annotations`) and its
VM configuration enables `default_vcpus` and `default_memory` (`enable_annotations`).
A pod asking for 2 vCPUs (Kata's annotation) and 768M (openEuler's `sandbox_mem`) sees
them in the guest; a bad or disabled annotation fails RunPodSandbox with the annotation
and the fix named, and leaves nothing behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.cri import CriRig
from kata_shim.devenv.criclient import CriClient, CriError, pod_config
from kata_shim.proto import cri_pb2
from kata_shim.sandbox.sizing import KATA_HYPERVISOR_PREFIX, KATA_MEMORY, KATA_VCPUS, POD_MEMORY
from tests.cri.conftest import check_tools
from tests.cri.podkit import Pod, leftovers

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def vm_cri_rig(guest_image: Path) -> Iterator[CriRig]:
    check_tools()
    with CriRig(prefix="cri-sizing", guest_image=guest_image) as rig:
        yield rig


def test_pod_annotations_size_the_vm(vm_cri_rig: CriRig) -> None:
    with CriClient(vm_cri_rig.cri_address) as client:
        pod = Pod(vm_cri_rig, client, "kata", "sized", {KATA_VCPUS: "2", POD_MEMORY: "768M"})
        container = pod.add("sleeper", "trap 'exit 0' TERM; while :; do sleep 1; done")
        client.wait_container_state(container, cri_pb2.CONTAINER_RUNNING)

        nproc = client.exec_sync(container, ["/bin/nproc"])
        assert nproc.stdout.decode().strip() == "2", nproc
        meminfo = client.exec_sync(container, ["/bin/grep", "MemTotal", "/proc/meminfo"])
        total_kib = int(meminfo.stdout.decode().split()[1])
        # 768 MiB less what the kernel keeps for itself; the default (512 MiB) is far below
        assert 640 * 1024 < total_kib <= 768 * 1024, meminfo.stdout
        qemu = [argv for _, argv in vm_cri_rig.leftovers() if "qemu-system" in argv]
        assert len(qemu) == 1 and "-smp 2 " in qemu[0] and "-m 768" in qemu[0], qemu

        pod.teardown()
        assert leftovers(vm_cri_rig, client, [pod.id, container], timeout=30) == {}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (KATA_VCPUS, "lots", f"annotation {KATA_VCPUS}='lots': not a number; fix: "),
        (KATA_MEMORY, "64", "64 MiB is below the minimum of 128 MiB; fix: give at least 128"),
        (
            KATA_HYPERVISOR_PREFIX + "kernel_params",
            "quiet",
            "is not enabled; fix: add 'kernel_params' to enable_annotations in [hypervisor.qemu]",
        ),
    ],
)
def test_bad_sizing_annotation_fails_run_pod_sandbox(
    vm_cri_rig: CriRig, key: str, value: str, expected: str
) -> None:
    with CriClient(vm_cri_rig.cri_address) as client:
        config = pod_config("badsize", uuid.uuid4().hex)
        config.annotations[key] = value
        with pytest.raises(CriError) as caught:
            client.run_pod(config, "kata")
        assert expected in str(caught.value), caught.value
        assert leftovers(vm_cri_rig, client, [], timeout=15) == {}
