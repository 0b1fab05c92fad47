"""The fork server under a real private containerd: forking, faults and every fallback.

A daemon forked by the server is told apart from a cold-exec'd one by its
/proc/<pid>/environ: the kernel keeps the server's initial environment block,
which carries KATA_SHIM_FORK_ADDRESS (the daemon's os.environ is the caller's).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kata_shim
from kata_shim.devenv.shim import KataRig
from kata_shim.shim import forkproto, procs
from kata_shim.shim.paths import socket_path

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SERVER_MODULE = b"kata_shim.shim.forkserver"


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[KataRig]:
    monkeypatch.setenv(forkproto.ENABLE_ENV, "on")  # whatever the default, these test it on
    with KataRig() as rig:
        yield rig


def paths(rig: KataRig) -> dict[str, str]:
    return forkproto.server_paths(rig.containerd.address)


def environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def forked(pid: int) -> bool:
    return f"{forkproto.ADDRESS_ENV}=".encode() in environ(pid)


def server_pids(rig: KataRig) -> list[int]:
    """Live fork servers for this rig's containerd."""
    mark = f"{forkproto.ADDRESS_ENV}={rig.containerd.address}\0".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        argv = procs.cmdline(int(name)) or []
        if argv[-1:] == [SERVER_MODULE.decode()] and mark in environ(int(name)):
            found.append(int(name))
    return found


def wait_for(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_server(rig: KataRig) -> int:
    """The one server serving this rig's containerd (waits until it accepts)."""
    wait_for("a fork server", lambda: server_pids(rig) and os.path.exists(paths(rig)["socket"]))
    (pid,) = server_pids(rig)
    return pid


def log_text(rig: KataRig) -> str:
    try:
        return Path(paths(rig)["log"]).read_text()
    except OSError:
        return ""


def bundle(rig: KataRig, task_id: str) -> Path:
    return rig.containerd.work / "state" / "io.containerd.runtime.v2.task" / "default" / task_id


def daemon_pid(rig: KataRig, task_id: str) -> int:
    return int((bundle(rig, task_id) / "shim.pid").read_text())


def start_pod(rig: KataRig, name: str) -> str:
    task_id = rig.id(name)
    result = rig.ctr(*rig.run_args(task_id, rig.sh("sleep 600"), "-d"))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return task_id


def status(rig: KataRig, task_id: str) -> str:
    listing = rig.ctr("task", "ls").stdout.decode()
    line = next((ln for ln in listing.splitlines() if ln.split()[:1] == [task_id]), "")
    return line.split()[-1] if line else ""


def remove_pod(rig: KataRig, task_id: str) -> None:
    rig.ctr("task", "kill", "-s", "SIGKILL", task_id)
    wait_for(f"{task_id} stopped", lambda: status(rig, task_id) in ("STOPPED", ""))
    rig.ctr("task", "delete", task_id)
    assert rig.ctr("container", "delete", task_id).returncode == 0
    rig.ids.remove(task_id)


def warm_server(rig: KataRig) -> int:
    """Make sure the server runs (a first pod brings it up); its pid."""
    if not server_pids(rig):
        remove_pod(rig, start_pod(rig, "warm"))
    return wait_server(rig)


class Exits:
    """`ctr events`, keeping the container ids of /tasks/exit events."""

    def __init__(self, rig: KataRig) -> None:
        self.proc = rig.containerd.popen_ctr("events")
        self.seen: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if " /tasks/exit " in line and '"container_id":"' in line:
                self.seen.put(line.split('"container_id":"', 1)[1].split('"', 1)[0])

    def wait(self, ids: set[str], timeout: float = 60.0) -> set[str]:
        got: set[str] = set()
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Empty):
            while not ids <= got:
                got.add(self.seen.get(timeout=max(0.1, deadline - time.monotonic())))
        return got & ids

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def test_first_start_is_cold_and_brings_up_the_server(rig: KataRig) -> None:
    cold = start_pod(rig, "cold")
    assert not forked(daemon_pid(rig, cold))
    assert "fork server not running (no socket): cold exec" in log_text(rig)
    server = wait_server(rig)
    warm = start_pod(rig, "warm")
    pid = daemon_pid(rig, warm)
    assert forked(pid)
    assert procs.is_our_shim(pid, warm)  # the cmdline `delete` checks is a daemon's
    assert procs.probe_connect(socket_path(_address(rig, warm)) or "", warm) == pid
    assert os.getsid(pid) == pid  # own session, like a cold exec
    assert _ppid(pid) != server  # not the server's child: its death cannot reach us
    (agent,) = _agents(pid)  # the local agent: the daemon's pre-forked child (zygote.py)
    assert forked(agent) and b"kata_shim.guest.main" in Path(f"/proc/{agent}/cmdline").read_bytes()
    for task_id in (cold, warm):
        remove_pod(rig, task_id)
    assert not rig.wait_clean()


def test_server_sigkilled_while_five_pods_run(rig: KataRig) -> None:
    old = warm_server(rig)
    pods = [start_pod(rig, f"p{i}") for i in range(5)]
    assert all(forked(daemon_pid(rig, p)) for p in pods)
    os.kill(old, signal.SIGKILL)
    wait_for("the server gone", lambda: not procs.is_alive(old))
    assert [status(rig, p) for p in pods] == ["RUNNING"] * 5
    exits = Exits(rig)
    try:
        for task_id in pods:
            rig.ctr("task", "kill", "-s", "SIGKILL", task_id)
        assert exits.wait(set(pods)) == set(pods)
    finally:
        exits.close()
    for task_id in pods:
        remove_pod(rig, task_id)
    after = start_pod(rig, "after")
    assert not forked(daemon_pid(rig, after))
    assert "fork server not running (socket refused): cold exec" in log_text(rig)
    new = wait_server(rig)
    assert new != old
    again = start_pod(rig, "again")
    assert forked(daemon_pid(rig, again))
    for task_id in (after, again):
        remove_pod(rig, task_id)


def test_forked_daemon_crash_affects_only_its_pod(rig: KataRig) -> None:
    server = warm_server(rig)
    victim, bystander = start_pod(rig, "victim"), start_pod(rig, "bystander")
    os.kill(daemon_pid(rig, victim), signal.SIGKILL)
    time.sleep(1.0)
    assert status(rig, bystander) == "RUNNING"
    ps = rig.ctr("task", "ps", bystander)
    assert ps.returncode == 0, ps.stderr
    assert procs.is_alive(server)
    third = start_pod(rig, "third")
    assert forked(daemon_pid(rig, third))
    rig.ctr("task", "delete", "--force", victim)
    rig.ctr("container", "delete", victim)
    rig.ids.remove(victim)
    for task_id in (bystander, third):
        remove_pod(rig, task_id)


@pytest.mark.timeout(900)
def test_fifty_pods_concurrently_through_one_server(rig: KataRig) -> None:
    server = warm_server(rig)
    ids = [rig.id(f"c{i}") for i in range(50)]
    runs = [
        subprocess.Popen(
            [
                "ctr",
                "--address",
                rig.containerd.address,
                *rig.run_args(i, rig.sh("sleep 600"), "-d"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in ids
    ]
    errors = [run.communicate(timeout=600)[1] for run in runs]
    failed = [e for run, e in zip(runs, errors, strict=True) if run.returncode != 0]
    assert not failed, f"{len(failed)} of 50 failed: {failed[0]!r}"
    assert server_pids(rig) == [server]
    assert sum(forked(daemon_pid(rig, i)) for i in ids) == 50
    assert [status(rig, i) for i in ids] == ["RUNNING"] * 50
    for task_id in ids:
        remove_pod(rig, task_id)


def test_server_in_another_mount_namespace_is_refused(rig: KataRig) -> None:
    server = _spawn_server_in_new_mount_namespace(rig)
    try:
        wait_for("the unshared server", lambda: os.path.exists(paths(rig)["socket"]))
        task_id = start_pod(rig, "mntns")
        assert not forked(daemon_pid(rig, task_id))
        assert "mount namespace" in log_text(rig), log_text(rig)
        remove_pod(rig, task_id)
    finally:
        os.kill(server, signal.SIGKILL)
        os.waitpid(server, 0)
        for name in ("socket", "lock", "log"):  # a killed server cannot clean up after itself
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths(rig)[name])


def test_upgrade_replaces_the_server(rig: KataRig) -> None:
    old = warm_server(rig)
    package = Path(kata_shim.__file__).parent / "shim"
    os.utime(package)  # what installing new files does to the package directory
    task_id = start_pod(rig, "upgraded")
    assert not forked(daemon_pid(rig, task_id))
    assert "(upgraded): cold exec" in log_text(rig)
    wait_for("the old server gone", lambda: not procs.is_alive(old))
    new = wait_server(rig)
    assert new != old
    again = start_pod(rig, "again")
    assert forked(daemon_pid(rig, again))
    for name in (task_id, again):
        remove_pod(rig, name)


def test_disabled_by_environment() -> None:
    assert not forkproto.enabled({forkproto.ENABLE_ENV: "off"})
    assert forkproto.enabled({forkproto.ENABLE_ENV: "1"})
    assert forkproto.enabled({}) is forkproto.DEFAULT_ENABLED


# ------------------------------------------------------------------ helpers
def _address(rig: KataRig, task_id: str) -> str:
    return (bundle(rig, task_id) / "address").read_text()


def _agents(daemon: int) -> list[int]:
    children = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if _ppid(int(name)) == daemon and procs.is_alive(int(name)):
                children.append(int(name))
    return children


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _spawn_server_in_new_mount_namespace(rig: KataRig) -> int:
    """A server in a private mount namespace, holding the lock as `start` would hand it over."""
    forkproto.make_fork_dir()
    lock = os.open(paths(rig)["lock"], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    log = os.open(paths(rig)["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        env = {**os.environ, forkproto.ADDRESS_ENV: rig.containerd.address}
        argv = ["unshare", "--mount", "--propagation", "private", "--"]
        argv += [sys.executable, "-m", "kata_shim.shim.forkserver"]
        actions = [(os.POSIX_SPAWN_DUP2, lock, 3), (os.POSIX_SPAWN_DUP2, log, 2)]
        return os.posix_spawnp(argv[0], argv, env, file_actions=actions)
    finally:
        os.close(lock)
        os.close(log)


def test_fork_leaves_no_attribute_names_in_the_type_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A child must not inherit cache slots that pin (and later unpin) the server's names."""
    from kata_shim.shim import forkserver

    probe = sys.intern(f"probe_{os.getpid()}_{time.monotonic_ns()}")
    baseline = sys.getrefcount(probe)
    assert getattr(forkserver.Server, probe, None) is None  # cached, as a miss
    assert sys.getrefcount(probe) > baseline  # the cache holds it
    at_fork: list[int] = []

    def fake_fork() -> int:
        at_fork.append(sys.getrefcount(probe))
        return 12345  # the parent's side: nothing runs in a child

    monkeypatch.setattr(forkserver.os, "fork", fake_fork)
    server = forkserver.Server("", "build")
    a, b = socket.socketpair()
    with a, b, server.sock:
        server.fork(1, a)
    assert at_fork == [baseline]
