"""Fault injection under a private containerd: every case ends with the right exits and events
and with nothing leaked (processes, mounts, sockets, state dirs: see leaks.py).

* SIGKILL of the local sandbox's agent → the task exits 255, TaskExit is
  published, Delete works.
* containerd restarts while one task keeps running and another exits during
  the downtime → the shim keeps running, the new containerd reconnects, sees
  the exit (State and the re-published TaskExit), the other task still runs.
* a stalled stdout reader (ctr SIGSTOPped while the container floods) → Kill
  and Delete complete, bounded.
* a full disk under containerd's log (a 1 MiB tmpfs, filled) while the shim
  logs at debug level → the whole lifecycle still works.
SIGKILL of QEMU (VM sandbox) is covered by
tests/integration/test_vm_containerd.py::test_pod_of_two_containers_in_one_vm_and_qemu_kill
(a VM boot under TCG is too slow to repeat here).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim import mounts
from kata_shim.devenv.shim import KataRig
from tests.integration.test_shim_containerd import _out, remove, start_sleeper, wait_status
from tests.reliability.events import Events
from tests.reliability.leaks import Inventory, leaks
from tests.reliability.shimclient import bundle_dir

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

AGENT_MARK = b"kata_shim.guest.main"


def _shim_pid(rig: KataRig, task_id: str) -> int:
    return int((bundle_dir(rig, task_id) / "shim.pid").read_text())


def _agent_pid(shim_pid: int) -> int:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            argv = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == shim_pid and AGENT_MARK in argv:
            return int(name)
    raise AssertionError(f"no agent child of shim {shim_pid}")


@pytest.fixture
def events(rig: KataRig) -> Iterator[Events]:
    subscriber = Events(rig.containerd)
    time.sleep(0.2)  # subscribed before the first event
    yield subscriber
    subscriber.close()


def test_agent_sigkill_exits_255_publishes_and_deletes(
    rig: KataRig, before: Inventory, events: Events
) -> None:
    task_id = start_sleeper(rig, "agentkill")
    os.kill(_agent_pid(_shim_pid(rig, task_id)), signal.SIGKILL)
    exit_event = events.wait("/tasks/exit", task_id)
    assert exit_event["exit_status"] == 255
    line = wait_status(rig, task_id, "STOPPED")
    deleted = remove(rig, task_id)
    assert deleted.returncode == 0, _out(deleted) + line
    assert events.wait("/tasks/delete", task_id)["exit_status"] == 255
    assert leaks(before, rig, ignore=frozenset({events.pid})) == []


def test_containerd_restart_with_a_running_and_an_exiting_task(
    rig: KataRig, before: Inventory
) -> None:
    runner = start_sleeper(rig, "runs")
    exiter = rig.id("exits")
    script = "sleep 2; exit 7"
    started = rig.ctr(*rig.run_args(exiter, rig.sh(script), "-d"))
    assert started.returncode == 0, _out(started)
    shims = {_shim_pid(rig, runner), _shim_pid(rig, exiter)}

    rig.containerd.stop()
    deadline = time.monotonic() + 15
    while any(script in argv for _, argv in rig.leftovers()):  # exits while nobody listens
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for pid in shims:
        os.kill(pid, 0)  # both shims kept running without containerd
    rig.containerd.start()
    events = Events(rig.containerd)
    try:
        assert wait_status(rig, exiter, "STOPPED").split()[1] != "0"
        assert events.wait("/tasks/exit", exiter)["exit_status"] == 7  # re-published
        wait_status(rig, runner, "RUNNING")
        assert rig.ctr("task", "exec", "--exec-id", "after", runner, "/bin/true").returncode == 0
        assert "exit with non-zero exit code 7" in _out(remove(rig, exiter))
        rig.ctr("task", "kill", "-s", "SIGKILL", runner)
        assert events.wait("/tasks/exit", runner)["exit_status"] == 137
        wait_status(rig, runner, "STOPPED")
        remove(rig, runner)
        assert leaks(before, rig, ignore=frozenset({events.pid})) == []
    finally:
        events.close()


def test_stalled_stdout_reader_kill_and_delete_are_bounded(
    rig: KataRig, before: Inventory, events: Events
) -> None:
    task_id = rig.id("stall")
    argv = ["ctr", "--address", rig.containerd.address]
    argv += rig.run_args(task_id, ["/bin/sh", "-c", f"yes flood-{rig.marker}"])
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as reader:
        try:
            wait_status(rig, task_id, "RUNNING")
            time.sleep(0.5)
            reader.send_signal(signal.SIGSTOP)  # the client stops reading its FIFO
            time.sleep(1.5)  # pipes and FIFO fill; the shim's writes now wait
            began = time.monotonic()
            assert rig.ctr("task", "kill", "-s", "SIGKILL", task_id, timeout=30).returncode == 0
            assert events.wait("/tasks/exit", task_id)["exit_status"] == 137
            wait_status(rig, task_id, "STOPPED", timeout=30)
            assert remove(rig, task_id).returncode == 0
            elapsed = time.monotonic() - began
            assert elapsed < 20, f"kill + exit + delete took {elapsed:.1f}s with a stalled reader"
        finally:
            reader.kill()  # ours; SIGKILL works on a stopped process
    assert leaks(before, rig, ignore=frozenset({events.pid})) == []


@contextlib.contextmanager
def _full_tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    try:
        with open(path / "filler", "wb") as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        yield path
    finally:
        mounts.unmount_all_under(path)
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_under_the_log_does_not_stop_the_shim(rig: KataRig) -> None:
    rig.containerd.stop()
    rig.containerd.debug = True  # containerd copies our debug-level shim log lines
    with _full_tmpfs(rig.work / "logdisk") as disk:
        log = rig.containerd.log_path
        log.unlink(missing_ok=True)
        log.symlink_to(disk / "containerd.log")
        rig.containerd.start(timeout=30)
        before = Inventory.take(rig)
        with contextlib.closing(Events(rig.containerd)) as events:
            time.sleep(0.2)
            task_id = rig.id("fulldisk")
            ran = rig.ctr(*rig.run_args(task_id, rig.sh("echo out; exit 3"), "--rm"))
            assert ran.returncode == 3 and ran.stdout == b"out\n", _out(ran)
            assert events.wait("/tasks/exit", task_id)["exit_status"] == 3
            sleeper = start_sleeper(rig, "fulldisk2")
            assert rig.ctr("task", "exec", "--exec-id", "e1", sleeper, "/bin/true").returncode == 0
            rig.ctr("task", "kill", "-s", "SIGKILL", sleeper)
            wait_status(rig, sleeper, "STOPPED")
            remove(rig, sleeper)
            assert leaks(before, rig, ignore=frozenset({events.pid})) == []
        rig.containerd.stop()
