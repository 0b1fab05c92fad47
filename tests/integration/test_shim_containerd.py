"""Our shim under a private Debian containerd 1.6: ctr run/exec/kill/pause/ps/metrics/events.

Each test gets a KataRig (its own containerd, our shim on its PATH, the local
hypervisor via KATA_CONF_FILE) and ends by asserting that no shim, agent or
runc process of its own is left. The rig cleans up by pid even on failure.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator

import pytest

from kata_shim.devenv.shim import KataRig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def rig() -> Iterator[KataRig]:
    with KataRig() as rig:
        yield rig


def _out(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stdout + result.stderr).decode(errors="replace")


def assert_clean(rig: KataRig) -> None:
    left = rig.wait_clean()
    assert not left, f"processes left behind: {left}"
    assert not rig.sockets(), f"shim sockets left behind: {rig.sockets()}"


def wait_status(rig: KataRig, task_id: str, status: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        listing = rig.ctr("task", "ls").stdout.decode()
        line = next((ln for ln in listing.splitlines() if ln.split()[:1] == [task_id]), "")
        if line.split()[-1:] == [status]:
            return line
        time.sleep(0.1)
    raise AssertionError(f"{task_id} never became {status}; last: {line!r}")


def remove(rig: KataRig, task_id: str) -> subprocess.CompletedProcess[bytes]:
    deleted = rig.ctr("task", "delete", task_id)
    assert rig.ctr("container", "delete", task_id).returncode == 0
    return deleted


def start_sleeper(rig: KataRig, name: str) -> str:
    task_id = rig.id(name)
    result = rig.ctr(*rig.run_args(task_id, rig.sh("sleep 600"), "-d"))
    assert result.returncode == 0, _out(result)
    wait_status(rig, task_id, "RUNNING")
    return task_id


def kill_and_remove(rig: KataRig, task_id: str) -> None:
    rig.ctr("task", "kill", "-s", "SIGKILL", task_id)
    wait_status(rig, task_id, "STOPPED")
    remove(rig, task_id)


def test_run_rm_prints_hello(rig: KataRig) -> None:
    task_id = rig.id("hello")
    began = time.monotonic()
    result = rig.ctr(*rig.run_args(task_id, rig.sh("echo hello"), "--rm"))
    print(f"ctr run --rm took {time.monotonic() - began:.2f}s")
    assert result.returncode == 0, _out(result) + rig.containerd.log_tail()
    assert result.stdout == b"hello\n"
    assert_clean(rig)


def test_run_by_absolute_runtime_path(rig: KataRig) -> None:
    task_id = rig.id("abs")
    args = rig.run_args(task_id, rig.sh("echo abs"), "--rm")
    args[args.index("io.containerd.kata.v2")] = str(rig.shim)
    result = rig.ctr(*args)
    assert result.returncode == 0, _out(result)
    assert result.stdout == b"abs\n"
    assert_clean(rig)


def test_exit_code_propagates(rig: KataRig) -> None:
    result = rig.ctr(*rig.run_args(rig.id("exit7"), rig.sh("exit 7"), "--rm"))
    assert result.returncode == 7, _out(result)
    assert_clean(rig)


def test_exec_without_tty(rig: KataRig) -> None:
    task_id = start_sleeper(rig, "exec")
    result = rig.ctr("task", "exec", "--exec-id", "e1", task_id, *rig.sh("echo exec-ok; exit 3"))
    assert result.returncode == 3, _out(result)
    assert result.stdout == b"exec-ok\n"
    piped = subprocess.run(
        ["ctr", "--address", rig.containerd.address, "task", "exec", "--exec-id", "e2", task_id,
         "/bin/cat"],
        input=b"from stdin\n", capture_output=True, timeout=30,
    )  # fmt: skip
    assert piped.returncode == 0 and piped.stdout == b"from stdin\n", piped
    kill_and_remove(rig, task_id)
    assert_clean(rig)


def _ctr_in_pty(rig: KataRig, *args: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run ctr with a terminal on stdin/stdout (ctr -t insists on one)."""
    master, slave = pty.openpty()
    cmd = ["ctr", "--address", rig.containerd.address, *args]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(5), output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


def test_exec_with_tty(rig: KataRig) -> None:
    task_id = start_sleeper(rig, "tty")
    code, output = _ctr_in_pty(
        rig, "task", "exec", "-t", "--exec-id", "t1", task_id, *rig.sh("tty; echo tty-ok; exit 4")
    )
    assert code == 4, output
    assert "/dev/pts/" in output and "tty-ok" in output
    kill_and_remove(rig, task_id)
    assert_clean(rig)


@pytest.mark.parametrize(("signal_name", "status"), [("SIGTERM", 143), ("SIGKILL", 137)])
def test_kill_reports_signal_status(rig: KataRig, signal_name: str, status: int) -> None:
    # host pid namespace: the process is not a namespace init, so SIGTERM kills it for real
    task_id = rig.id(f"kill{status}")
    spec = rig.spec_file(task_id, rig.sh("sleep 600"), pid_namespace=False)
    assert rig.ctr(*rig.run_spec_args(task_id, spec, "-d")).returncode == 0
    wait_status(rig, task_id, "RUNNING")
    assert rig.ctr("task", "kill", "-s", signal_name, task_id).returncode == 0
    wait_status(rig, task_id, "STOPPED")
    deleted = remove(rig, task_id)
    assert f"exit with non-zero exit code {status}" in _out(deleted)
    assert_clean(rig)


def test_pause_resume_ps_metrics(rig: KataRig) -> None:
    task_id = start_sleeper(rig, "pause")
    assert rig.ctr("task", "pause", task_id).returncode == 0
    wait_status(rig, task_id, "PAUSED")
    assert rig.ctr("task", "resume", task_id).returncode == 0
    wait_status(rig, task_id, "RUNNING")
    ps = rig.ctr("task", "ps", task_id)
    assert ps.returncode == 0, _out(ps)
    lines = ps.stdout.decode().splitlines()
    assert lines[0].split()[0] == "PID" and len(lines) >= 2 and lines[1].split()[0].isdigit()
    metrics = rig.ctr("task", "metrics", task_id)
    assert metrics.returncode == 0, _out(metrics)
    assert "memory" in metrics.stdout.decode(), metrics.stdout
    kill_and_remove(rig, task_id)
    assert_clean(rig)


def test_detached_run_then_delete(rig: KataRig) -> None:
    task_id = rig.id("detached")
    assert rig.ctr(*rig.run_args(task_id, rig.sh("exit 9"), "-d")).returncode == 0
    wait_status(rig, task_id, "STOPPED")
    deleted = remove(rig, task_id)
    assert deleted.returncode == 0 and "exit code 9" in _out(deleted)
    assert rig.ctr("task", "ls").stdout.decode().count(task_id) == 0
    assert_clean(rig)


def _events_for(lines: list[str], task_id: str) -> list[tuple[str, dict[str, object]]]:
    found = []
    for line in lines:
        if task_id not in line or "{" not in line:
            continue
        topic = next(part for part in line.split() if part.startswith("/"))
        found.append((topic, json.loads(line[line.index("{") :])))
    return found


def test_events_are_ordered(rig: KataRig) -> None:
    events = rig.containerd.popen_ctr("events")
    try:
        time.sleep(0.5)  # subscribed before anything happens
        task_id = rig.id("events")
        init = rig.sh("while [ ! -e /dev/shm/go ]; do sleep 0.05; done; exit 2")
        assert rig.ctr(*rig.run_args(task_id, init, "-d")).returncode == 0
        wait_status(rig, task_id, "RUNNING")
        execd = rig.ctr(
            "task", "exec", "--exec-id", "x1", task_id, *rig.sh("touch /dev/shm/go; exit 5")
        )
        assert execd.returncode == 5, _out(execd)
        wait_status(rig, task_id, "STOPPED")
        remove(rig, task_id)
        time.sleep(1.0)
    finally:
        events.terminate()
        out, _ = events.communicate(timeout=10)
    seen = _events_for(out.decode(errors="replace").splitlines(), task_id)
    topics = [topic for topic, _ in seen if topic.startswith("/tasks/")]
    assert topics == [
        "/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started",
        "/tasks/exit", "/tasks/exit", "/tasks/delete",
    ], seen  # fmt: skip
    exits = [payload for topic, payload in seen if topic == "/tasks/exit"]
    assert exits[0].get("id") == "x1" and exits[0].get("exit_status") == 5
    assert exits[1].get("id") == task_id and exits[1].get("exit_status") == 2
    assert_clean(rig)
