"""`isula run -d`, `exec`, `stop`, `rm` through the lib-shim-v2 emulation (local sandbox).

Each test drives our real shim binary exactly as iSulad does (tests/isulad/isulad.py)
and ends with nothing left: no shim, agent or container process, no socket, no
mount, no sandbox state dir.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.isulad import libshimv2 as lib
from tests.isulad.fifos import EXIT_INT
from tests.isulad.isulad import ShimStartError
from tests.isulad.rig import DOCKER_SANDBOX, DOCKER_TYPE, IsuladRig
from tests.isulad.ttrpc_sync import RpcError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def log_text(bundle: Path) -> str:
    return (bundle / "log").read_text(errors="replace")


def shim_pid(bundle: Path) -> int:
    return int((bundle / "shim.pid").read_text())


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone(pid: int, timeout: float = 10.0) -> bool:
    """The process ended (bounded wait): an exiting process has already lost its argv
    (so the marker scan misses it) a moment before it turns into a zombie."""
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_run_detached_reports_the_exit_and_rm_leaves_nothing(rig: IsuladRig) -> None:
    cid = rig.id("run")
    isulad = rig.isulad
    container = isulad.create(cid, rig.spec("echo hello; echo oops >&2; sleep 0.5; exit 3"))
    address = container.start_stdout.decode()
    assert address.startswith("unix:///run/containerd/s/") and address == address.strip()
    assert container.start_stderr == b""
    assert (container.bundle / "address").read_text() == address
    assert os.stat(container.bundle / "log").st_size >= 0 and (container.bundle / "log").is_file()
    pid = shim_pid(container.bundle)
    assert container.pid > 0

    isulad.start(cid)
    assert container.exit_fifo is not None
    assert container.exit_fifo.wait(30) == 3
    assert container.output("out") == "hello\n"
    assert container.output("err") == "oops\n"
    assert container.cleaned.wait(30)
    assert container.monitor_status == 3
    # the supervisor's cleanup: Kill(0) says "gone", then Delete and Shutdown succeed
    assert isulad.outcomes("kill", cid)[-1].startswith("RpcError"), isulad.calls
    assert isulad.outcomes("delete", cid) == ["ok"]
    assert isulad.outcomes("shutdown", cid) == ["ok"]
    assert not container.state.exists()
    deadline_ok = rig.wait_clean()
    assert not deadline_ok and gone(pid)
    log = log_text(container.bundle)
    for topic in ("/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"):
        assert f"post event {topic}" in log, log
    isulad.rm(cid)
    assert not container.bundle.exists()
    rig.assert_clean()


def test_shim_writes_the_exit_fifo_itself_for_isulad_without_wait(rig: IsuladRig) -> None:
    """iSulad before 2023-08 had no Wait thread: the EXIT_FIFO_DIR write alone must do."""
    isulad = rig.new_isulad(wait_monitor=False)
    rig.isulad = isulad
    cid = rig.id("legacy")
    container = isulad.create(cid, rig.spec("exit 42"))
    isulad.start(cid)
    assert container.exit_fifo is not None
    assert container.exit_fifo.wait(30) == 42
    assert isulad.outcomes("wait", cid) == []
    assert container.cleaned.wait(30)
    isulad.rm(cid)
    rig.assert_clean()


def test_both_exit_writers_carry_the_same_native_int(rig: IsuladRig) -> None:
    isulad = rig.new_isulad()
    isulad.auto_clean = False
    rig.isulad = isulad
    cid = rig.id("both")
    container = isulad.create(cid, rig.spec("exit 7"))
    isulad.start(cid)
    assert container.exit_fifo is not None
    assert container.exit_fifo.wait(30) == 7
    assert container.monitor is not None
    container.monitor.join(30)
    extra = container.exit_fifo.drain_extra()
    assert extra == EXIT_INT.pack(7), extra  # the second writer's int, nothing else
    isulad.clean(cid)
    isulad.rm(cid)
    rig.assert_clean()


def test_exec_foreground_and_detached(rig: IsuladRig) -> None:
    cid = rig.id("exec")
    isulad = rig.isulad
    isulad.create(cid, rig.spec("sleep 600"))
    isulad.start(cid)
    code, out, err = isulad.exec(cid, "e1", rig.sh("echo in-exec; echo to-err >&2; exit 4"))
    assert (code, out, err) == (4, "in-exec\n", "to-err\n")
    with pytest.raises(RpcError):  # Start fails: an error at once, like runc's "exec failed"
        isulad.exec(cid, "bad", ["/no/such/binary"])
    code, _, _ = isulad.exec(cid, "e2", rig.sh("sleep 0.2"), detach=True)
    starts = isulad.outcomes("start", cid)
    assert code is None and starts[:2] == ["ok", "ok"] and starts[3] == "ok", starts
    assert starts[2].startswith("RpcError"), starts
    code, out, _ = isulad.exec(cid, "e3", rig.sh("sleep 0.5; stty size; exit 2"), tty=(33, 101))
    assert (code, out.split()) == (2, ["33", "101"]), out
    with pytest.raises(RpcError):  # the init has no terminal: an error, not a hang
        lib.shim_v2_resize_pty(cid, None, 10, 10)
    state = isulad.state(cid)
    assert state.status == "running" and state.pid > 0
    # SIGTERM to a pid 1 without a handler: the agent upgrades it to SIGKILL (as Kata's does)
    assert isulad.stop(cid, timeout=2) == 137
    assert isulad.containers[cid].cleaned.wait(30)
    isulad.rm(cid)
    rig.assert_clean()


def test_stop_with_sigterm_handler(rig: IsuladRig) -> None:
    cid = rig.id("stop")
    isulad = rig.isulad
    container = isulad.create(cid, rig.spec("trap 'exit 143' TERM; sleep 600 & wait"))
    isulad.start(cid)
    assert isulad.detect_process(cid)  # Kill(0) succeeds while it runs
    assert isulad.stop(cid, timeout=10) == 143
    assert container.cleaned.wait(30)
    kills = isulad.outcomes("kill", cid)
    assert kills[:2] == ["ok", "ok"] and kills[-1].startswith("RpcError"), kills
    isulad.rm(cid)
    rig.assert_clean()


def test_kill_and_probe_after_the_exit_never_hang(rig: IsuladRig) -> None:
    isulad = rig.new_isulad()
    isulad.auto_clean = False
    rig.isulad = isulad
    cid = rig.id("after")
    container = isulad.create(cid, rig.spec("exit 0"))
    isulad.start(cid)
    assert container.exit_fifo is not None and container.exit_fifo.wait(30) == 0
    assert not isulad.detect_process(cid)  # Kill(0): the process is gone → error
    isulad.kill(cid, signal.SIGKILL)  # Kata: stop signals on an exited task are no-ops
    isulad.kill(cid, signal.SIGTERM)
    state = isulad.state(cid)
    assert (state.status, state.exit_status) == ("stopped", 0)
    isulad.clean(cid)
    isulad.rm(cid)
    rig.assert_clean()


def test_run_with_a_terminal_and_resize(rig: IsuladRig) -> None:
    """`isula run -dt`: terminal Create (stdout only), ResizePty(id, "") after Start."""
    cid = rig.id("tty")
    isulad = rig.isulad
    spec = rig.spec("sleep 1; stty size; tty; exit 9")
    spec["process"]["terminal"] = True
    container = isulad.create(cid, spec, terminal=True)
    isulad.start(cid)
    isulad.resize(cid, 40, 120)
    assert container.exit_fifo is not None and container.exit_fifo.wait(30) == 9
    lines = container.output("out").split()
    assert lines[:2] == ["40", "120"] and lines[2].startswith("/dev/pts/"), lines
    assert container.cleaned.wait(30)
    isulad.rm(cid)
    rig.assert_clean()


def test_pod_container_without_its_sandbox_fails_start_cleanly(rig: IsuladRig) -> None:
    cid = rig.id("orphan")
    spec = rig.spec("true", {DOCKER_TYPE: "container", DOCKER_SANDBOX: rig.id("nosandbox")})
    with pytest.raises(ShimStartError, match="has no shim listening"):
        rig.isulad.create(cid, spec)
    assert not rig.shims()
    rig.isulad.rm(cid)
    rig.assert_clean()


def test_start_again_after_the_exit_gets_a_new_shim(rig: IsuladRig) -> None:
    """`isula start` of an exited container: same bundle (stale address, shim.pid), new shim."""
    cid = rig.id("again")
    isulad = rig.isulad
    first = isulad.create(cid, rig.spec("exit 1"))
    isulad.start(cid)
    assert first.exit_fifo is not None and first.exit_fifo.wait(30) == 1
    assert first.cleaned.wait(30)
    old_pid = shim_pid(first.bundle)
    second = isulad.create(cid, rig.spec("exit 2"))
    assert shim_pid(second.bundle) != old_pid
    isulad.start(cid)
    assert second.exit_fifo is not None and second.exit_fifo.wait(30) == 2
    assert second.cleaned.wait(30)
    isulad.rm(cid)
    rig.assert_clean()


def test_failed_create_does_not_leave_the_shim_behind(rig: IsuladRig) -> None:
    """After a failed Create iSulad only sends Kill(SIGKILL) (no Shutdown, no `delete`):
    a shim left with no task must exit on its own."""
    cid = rig.id("badroot")
    spec = rig.spec("true")
    spec["root"]["path"] = str(rig.work / "no-such-rootfs")
    with pytest.raises(RpcError):
        rig.isulad.create(cid, spec)
    assert rig.isulad.outcomes("kill", cid)[0].startswith("RpcError")  # NotFound: no task
    rig.isulad.rm(cid)
    rig.assert_clean()
