"""`[runtime] static_sandbox_resource_mgmt = true` end to end (QEMU, TCG): the containers'
limits that containerd's CRI writes on the sandbox container (`io.kubernetes.cri.sandbox-
cpu-quota/period`, `...sandbox-memory`) are added to the configured size (1 vCPU, 512 MiB).
`ctr` stands in for CRI here (the annotations are set on the spec as CRI sets them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.shim import KataRig
from kata_shim.sandbox.sizing import CRI_CPU_PERIOD, CRI_CPU_QUOTA, CRI_MEMORY
from tests.fakes.vmkeys import vm_keys
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def static_rig(guest_image: Path) -> Iterator[KataRig]:
    keys = vm_keys(guest_image, initrd=True)
    with KataRig(hypervisor="qemu", hypervisor_keys=keys, prefix="sizing-") as rig:
        text = rig.config.read_text()  # the file ends in [runtime]; each new shim reads it
        rig.config.write_text(text + "static_sandbox_resource_mgmt = true\n")
        yield rig


def test_static_sandbox_resource_mgmt_adds_the_containers_limits(static_rig: KataRig) -> None:
    rig = static_rig
    task = rig.id("static")
    annotations = {
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": task,
        CRI_CPU_QUOTA: "50000",  # half a CPU: rounded up to one more vCPU
        CRI_CPU_PERIOD: "100000",
        "io.kubernetes.cri.sandbox-cpu-shares": "512",
        CRI_MEMORY: str(256 << 20),
    }
    spec = rig.spec_file(task, rig.sh("sleep 600"), annotations=annotations)
    result = rig.ctr(*rig.run_spec_args(task, spec, "-d"), timeout=240)
    assert result.returncode == 0, _out(result) + rig.containerd.log_tail()
    wait_status(rig, task, "RUNNING", timeout=60)
    script = "nproc; grep MemTotal /proc/meminfo"
    done = rig.ctr("task", "exec", "--exec-id", "size", task, *rig.sh(script), timeout=120)
    assert done.returncode == 0, _out(done)
    nproc, meminfo = done.stdout.decode().splitlines()
    assert nproc == "2"
    total_kib = int(meminfo.split()[1])
    assert 640 * 1024 < total_kib <= 768 * 1024, meminfo  # 512 + 256 MiB, less the kernel's

    rig.ctr("task", "kill", "-s", "SIGKILL", task)
    wait_status(rig, task, "STOPPED", timeout=60)
    remove(rig, task)
    assert_clean(rig)
