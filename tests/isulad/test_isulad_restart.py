"""iSulad restarts: the daemon process dies, the task exits (or not) meanwhile, a new one restores.

A new process reads `<bundle>/address`, connects, calls State and restarts the
Wait thread (rt_shim_status); exits that happened while nobody listened are
reported at once, a later exit normally. The shim outlives its client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.isulad.rig import DOCKER_SANDBOX, DOCKER_TYPE, IsuladRig
from tests.isulad.test_isulad_pod import exit_order

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def start_in_child(rig: IsuladRig, *containers: tuple[str, object]) -> subprocess.Popen[bytes]:
    """An iSulad process that creates and starts (id, spec) in order, then waits to be killed."""
    args: list[str] = []
    for task_id, spec in containers:
        spec_file = rig.work / f"{task_id}.json"
        spec_file.write_text(json.dumps(spec))
        args += [task_id, str(spec_file)]
    module = "tests.isulad.daemon_child"
    child = subprocess.Popen(
        [sys.executable, "-m", module, str(rig.isulad.root), *args],
        cwd=ROOT,
        env=rig.env,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith(b"started "), line
    return child


def kill_child(child: subprocess.Popen[bytes]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert child.stdout is not None
    child.stdout.close()


def test_exit_while_isulad_is_down_is_reported_after_restore(rig: IsuladRig) -> None:
    cid = rig.id("down")
    child = start_in_child(rig, (cid, rig.spec("sleep 1; exit 6")))
    bundle = rig.isulad.engines / cid
    shim = int((bundle / "shim.pid").read_text())
    kill_child(child)
    time.sleep(2.5)  # the task exits while no client is connected
    assert Path(f"/proc/{shim}").exists(), "the shim did not outlive iSulad"

    isulad = rig.isulad  # the restarted daemon: same directories, a fresh process state
    state = isulad.restore(cid)
    assert (state.status, state.exit_status) == ("stopped", 6)
    container = isulad.containers[cid]
    assert container.exit_fifo is not None and container.exit_fifo.wait(30) == 6
    assert container.cleaned.wait(30)
    assert isulad.outcomes("delete", cid) == ["ok"] and isulad.outcomes("shutdown", cid) == ["ok"]
    isulad.rm(cid)
    rig.assert_clean()


def test_restore_while_running_then_the_exit(rig: IsuladRig) -> None:
    cid = rig.id("up")
    child = start_in_child(rig, (cid, rig.spec("sleep 600")))
    kill_child(child)

    isulad = rig.isulad
    state = isulad.restore(cid)
    assert state.status == "running" and state.pid > 0
    assert isulad.detect_process(cid)
    code, out, _ = isulad.exec(cid, "after-restart", rig.sh("echo still-here"))
    assert (code, out) == (0, "still-here\n")
    assert isulad.stop(cid, timeout=1) == 137
    container = isulad.containers[cid]
    assert container.cleaned.wait(30)
    assert container.monitor_status == 137  # the Wait started on the new connection returned
    isulad.rm(cid)
    rig.assert_clean()


def test_pod_restored_after_a_restart_still_exits_in_order(rig: IsuladRig) -> None:
    sandbox, app = rig.id("sb"), rig.id("app")
    app_spec = rig.spec("sleep 600", {DOCKER_TYPE: "container", DOCKER_SANDBOX: sandbox})
    sandbox_spec = rig.spec("sleep 600", {DOCKER_TYPE: "podsandbox"})
    kill_child(start_in_child(rig, (sandbox, sandbox_spec), (app, app_spec)))
    isulad = rig.isulad
    for cid in (sandbox, app):
        assert isulad.restore(cid).status == "running"
    assert len(rig.shims()) == 1
    isulad.kill(sandbox, signal.SIGKILL)
    for cid in (app, sandbox):
        container = isulad.containers[cid]
        assert container.exit_fifo is not None and container.exit_fifo.wait(30) == 137
        assert container.cleaned.wait(30)
    log = (isulad.engines / sandbox / "log").read_text()
    assert exit_order(log) == [app, sandbox], exit_order(log)
    for cid in (app, sandbox):
        isulad.rm(cid)
    rig.assert_clean()
