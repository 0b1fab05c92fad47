"""Pod semantics in the VM through a real containerd: the containers of one VM pod share
the pod's /dev/shm, and the guest's hostname is the pod's (the sandbox container's spec
hostname), which a container without a hostname of its own sees."""

from __future__ import annotations

import json
import secrets

import pytest

from kata_shim.devenv.shim import KataRig
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status
from tests.integration.test_vm_containerd import (
    CRI_SANDBOX,
    CRI_TYPE,
    mounts_of,
    vm_rig,
)

__all__ = ["vm_rig"]  # the fixture, shared with test_vm_containerd

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def run_pod_container(rig: KataRig, task_id: str, sandbox: str, hostname: str | None) -> None:
    """A sleeper of pod `sandbox` (its sandbox container when task_id == sandbox); the
    spec's `hostname` is set to `hostname`, or removed when None."""
    kind = "sandbox" if task_id == sandbox else "container"
    path = rig.spec_file(
        task_id, rig.sh("sleep 600"), annotations={CRI_TYPE: kind, CRI_SANDBOX: sandbox}
    )
    spec = json.loads(path.read_text())
    spec.pop("hostname", None)
    if hostname is not None:
        spec["hostname"] = hostname
    path.write_text(json.dumps(spec))
    result = rig.ctr(*rig.run_spec_args(task_id, path, "-d"), timeout=180)
    assert result.returncode == 0, _out(result) + rig.containerd.log_tail()
    wait_status(rig, task_id, "RUNNING", timeout=60)


def exec_in(rig: KataRig, task_id: str, exec_id: str, script: str) -> str:
    result = rig.ctr("task", "exec", "--exec-id", exec_id, task_id, *rig.sh(script), timeout=120)
    assert result.returncode == 0, _out(result)
    return result.stdout.decode()


def test_pod_shares_dev_shm_and_hostname(vm_rig: KataRig) -> None:
    sandbox, app = vm_rig.id("pod-sb"), vm_rig.id("pod-app")
    hostname = f"pod-{secrets.token_hex(4)}"
    run_pod_container(vm_rig, sandbox, sandbox, hostname)
    run_pod_container(vm_rig, app, sandbox, None)  # inherits the guest's hostname
    written = exec_in(vm_rig, sandbox, "w", f"echo {hostname}-shm > /dev/shm/x; hostname")
    assert written.split() == [hostname], written
    read = exec_in(vm_rig, app, "r", "cat /dev/shm/x; hostname; grep ' /dev/shm ' /proc/mounts")
    lines = read.splitlines()
    assert lines[:2] == [f"{hostname}-shm", hostname], read
    assert "tmpfs" in lines[2] and "size=65536k" in lines[2], read
    for task in (app, sandbox):
        vm_rig.ctr("task", "kill", "-s", "SIGKILL", task)
        wait_status(vm_rig, task, "STOPPED", timeout=60)
        remove(vm_rig, task)
    assert_clean(vm_rig)
    assert not mounts_of(vm_rig)
