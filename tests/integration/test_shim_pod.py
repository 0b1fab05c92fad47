"""A pod of two containers (CRI annotations) shares one shim; deleting a pod container
leaves the sandbox's shim serving; the sandbox's delete then leaves nothing behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.shim import KataRig
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"


@pytest.fixture
def rig() -> Iterator[KataRig]:
    with KataRig() as rig:
        yield rig


def _bundle(rig: KataRig, task_id: str) -> Path:
    return rig.containerd.work / "state" / "io.containerd.runtime.v2.task" / "default" / task_id


def _shims(rig: KataRig) -> list[tuple[int, str]]:
    return [(pid, argv) for pid, argv in rig.leftovers() if "containerd-shim-kata-v2" in argv]


def _run(rig: KataRig, task_id: str, annotations: dict[str, str]) -> None:
    spec = rig.spec_file(task_id, rig.sh("sleep 600"), annotations=annotations)
    result = rig.ctr(*rig.run_spec_args(task_id, spec, "-d"))
    assert result.returncode == 0, _out(result) + rig.containerd.log_tail()
    wait_status(rig, task_id, "RUNNING")


def test_pod_shares_one_shim(rig: KataRig) -> None:
    sandbox, container = rig.id("sandbox"), rig.id("app")
    _run(rig, sandbox, {CRI_TYPE: "sandbox", CRI_SANDBOX: sandbox})
    _run(rig, container, {CRI_TYPE: "container", CRI_SANDBOX: sandbox})

    shims = _shims(rig)
    assert len(shims) == 1, shims
    assert f"-id {sandbox}" in shims[0][1]
    address = (_bundle(rig, sandbox) / "address").read_text()
    assert (_bundle(rig, container) / "address").read_text() == address
    assert not (_bundle(rig, container) / "shim.pid").exists()
    pids = {line.split()[0]: line.split()[1] for line in
            rig.ctr("task", "ls").stdout.decode().splitlines()[1:]}  # fmt: skip
    assert pids[sandbox] == pids[container]  # both report the sandbox (agent) pid

    execd = rig.ctr("task", "exec", "--exec-id", "e1", container, *rig.sh("echo in-pod"))
    assert execd.returncode == 0 and execd.stdout == b"in-pod\n", _out(execd)

    rig.ctr("task", "kill", "-s", "SIGKILL", container)
    wait_status(rig, container, "STOPPED")
    remove(rig, container)  # containerd then runs `delete` for the pod container
    time.sleep(2.0)  # give that `delete` time to (wrongly) hurt the sandbox
    assert _shims(rig) == shims, "the pod's shim did not survive a pod container's removal"
    wait_status(rig, sandbox, "RUNNING")

    rig.ctr("task", "kill", "-s", "SIGKILL", sandbox)
    wait_status(rig, sandbox, "STOPPED")
    remove(rig, sandbox)
    assert_clean(rig)
