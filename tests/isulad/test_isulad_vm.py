"""The iSulad emulation against the QEMU sandbox (TCG here): a pod in one VM, end to end.

One VM boot for: `isula run -d` of a sandbox and two containers (dockershim
annotations), `isula exec` proving the guest kernel, `isula stats` (v1 Metrics
from the guest's cgroups), `isula top`, pause/unpause, `isula stop` of one
container (SIGTERM to a pid 1 without a handler: the agent sends SIGKILL), then the sandbox is
killed: the remaining container's exit is reported before the sandbox's, the
supervisor's Delete + Shutdown tear the VM down, and nothing is left.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.vmkeys import vm_keys
from tests.isulad.rig import DOCKER_SANDBOX, DOCKER_TYPE, IsuladRig
from tests.isulad.test_isulad_pod import exit_order

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture
def vm_rig(guest_image: Path) -> Iterator[IsuladRig]:
    keys = vm_keys(guest_image, initrd=True)
    with IsuladRig(hypervisor="qemu", hypervisor_keys=keys) as rig:
        yield rig


def qemus(rig: IsuladRig) -> list[int]:
    return [pid for pid, argv in rig.leftovers() if "qemu-system" in argv]


def test_pod_in_a_vm_through_lib_shim_v2(vm_rig: IsuladRig) -> None:
    rig, isulad = vm_rig, vm_rig.isulad
    sandbox, app1, app2 = rig.id("sb"), rig.id("app1"), rig.id("app2")
    isulad.create(sandbox, rig.spec("sleep 600", {DOCKER_TYPE: "podsandbox"}))
    isulad.start(sandbox)
    assert len(qemus(rig)) == 1
    for app in (app1, app2):
        spec = rig.spec("sleep 600", {DOCKER_TYPE: "container", DOCKER_SANDBOX: sandbox})
        isulad.create(app, spec)
        isulad.start(app)
    assert len(qemus(rig)) == 1 and len(rig.shims()) == 1

    code, out, _ = isulad.exec(app1, "uname", rig.sh("uname -r; exit 5"))
    assert code == 5 and out.strip() and out.strip() != os.uname().release, out
    stats = isulad.stats(app1)
    assert stats.pids_current >= 1 and stats.cpu_use_nanos > 0 and stats.mem_used > 0
    assert isulad.top(app1) == isulad.containers[app1].pid == qemus(rig)[0]
    isulad.pause(app1)
    assert isulad.state(app1).status == "paused"
    isulad.resume(app1)
    assert isulad.state(app1).status == "running"

    assert isulad.stop(app1, timeout=2) == 137
    assert isulad.containers[app1].cleaned.wait(60)
    assert len(qemus(rig)) == 1  # the pod's VM still serves the others

    isulad.kill(sandbox, signal.SIGKILL)
    for cid in (app2, sandbox):
        fifo = isulad.containers[cid].exit_fifo
        assert fifo is not None and fifo.wait(60) == 137, cid
    log = (isulad.containers[sandbox].bundle / "log").read_text()
    assert exit_order(log)[-2:] == [app2, sandbox], exit_order(log)
    for cid in (app2, sandbox):
        assert isulad.containers[cid].cleaned.wait(60), cid
        assert isulad.outcomes("delete", cid) == ["ok"], isulad.calls
    for cid in (app1, app2, sandbox):
        isulad.rm(cid)
    rig.assert_clean()


def test_qemu_killed_under_isulad_reports_255_and_leaves_nothing(vm_rig: IsuladRig) -> None:
    """No `delete` action under iSulad: Delete + Shutdown alone must clean a dead VM up."""
    rig, isulad = vm_rig, vm_rig.isulad
    cid = rig.id("vmdies")
    isulad.create(cid, rig.spec("sleep 600"))
    isulad.start(cid)
    (qemu,) = qemus(rig)
    os.kill(qemu, signal.SIGKILL)
    container = isulad.containers[cid]
    assert container.exit_fifo is not None and container.exit_fifo.wait(60) == 255
    assert container.cleaned.wait(60)
    assert isulad.outcomes("delete", cid) == ["ok"] and isulad.outcomes("shutdown", cid) == ["ok"]
    isulad.rm(cid)
    rig.assert_clean()
