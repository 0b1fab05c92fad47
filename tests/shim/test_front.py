"""The C front (csrc/shimfront.c): start/delete forked by the server, and every fallback.

The shim is driven the way containerd drives it (cwd = bundle, -address of a
socket we listen on, options on stdin), without containerd in the way, so
stdout, stderr and the exit status are seen exactly. The front is a copy of
the installed one in a scratch bin dir whose `containerd-shim-kata-v2-py` is a
wrapper that records every exec of the Python entry: a forked action leaves
no record, a fallback does.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
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
from kata_shim.proto import task_pb2
from kata_shim.shim import forkproto, frontchild, procs
from kata_shim.shim.paths import socket_address, socket_path

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
NAMESPACE = "cfront"
SPEC = {
    "ociVersion": "1.0.2",
    "process": {"args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin"]},
    "root": {"path": "rootfs"},
    "annotations": {},
}
OPTIONS = b"\x0a\x05hello\x12\x03abc"  # an Any-shaped blob: start saves it verbatim


class Front:
    """A fake containerd address, a recording copy of the front, the daemons we started."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.address = str(work / "containerd.sock")
        self.containerd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.containerd.bind(self.address)
        self.containerd.listen(1)
        self.paths = forkproto.server_paths(self.address)
        self.record = work / "python-execs"
        bin_dir = work / "bin"
        bin_dir.mkdir()
        self.shim = bin_dir / "containerd-shim-kata-v2"
        shutil.copy(VENV_BIN / "containerd-shim-kata-v2", self.shim)
        wrapper = bin_dir / "containerd-shim-kata-v2-py"
        real = VENV_BIN / "containerd-shim-kata-v2-py"
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {self.record}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
        self.count = 0
        self.daemons: list[int] = []

    def bundle(self, config: bool = True) -> tuple[str, Path]:
        self.count += 1
        task_id = f"cfront{os.getpid()}t{self.count}"
        path = self.work / task_id
        (path / "rootfs").mkdir(parents=True)
        if config:
            (path / "config.json").write_text(json.dumps(SPEC))
        return task_id, path

    def run(
        self, task_id: str, bundle: Path, action: str, stdin: bytes = b"", **env: str
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [str(self.shim), "-namespace", NAMESPACE, "-address", self.address]
        argv += ["-publish-binary", "/bin/true", "-id", task_id, action]
        environ = {k: v for k, v in os.environ.items() if k not in ("TTRPC_ADDRESS",)}
        environ.update({forkproto.ENABLE_ENV: "on", "CFRONT_MARK": "x"}, **env)
        done = subprocess.run(
            argv, cwd=bundle, env=environ, input=stdin, capture_output=True, timeout=60
        )
        pid_file = bundle / "shim.pid"
        if action == "start" and pid_file.exists():
            self.daemons.append(int(pid_file.read_text()))
        return done

    def python_execs(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self.paths["log"]).read_text()
        return ""

    def start_server(self) -> int:
        forkproto.ensure_server(self.address, self.paths)
        return self.wait_server()

    def wait_server(self) -> int:
        deadline = time.monotonic() + 60
        while not (self.server_pids() and os.path.exists(self.paths["socket"])):
            assert time.monotonic() < deadline, "no fork server came up"
            time.sleep(0.05)
        return self.server_pids()[0]

    def server_pids(self) -> list[int]:
        mark = f"{forkproto.ADDRESS_ENV}={self.address}\0".encode()
        found = []
        for name in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                argv = procs.cmdline(int(name)) or []
                environ = Path(f"/proc/{name}/environ").read_bytes()
                if argv[-1:] == ["kata_shim.shim.forkserver"] and mark in environ:
                    found.append(int(name))
        return found

    def close(self) -> None:
        for pid in self.daemons:
            procs.stop_process(pid)
        for pid in self.server_pids():
            os.kill(pid, signal.SIGKILL)
        self.containerd.close()
        for name in ("socket", "lock", "log"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths[name])


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    rig = Front(tmp_path)
    try:
        yield rig
    finally:
        rig.close()


def forked(pid: int) -> bool:
    """A daemon forked by the server: the kernel keeps the server's initial environment."""
    with contextlib.suppress(OSError):
        return f"{forkproto.ADDRESS_ENV}=".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    return False


def stop_daemon(task_id: str, bundle: Path) -> None:
    pid = int((bundle / "shim.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    assert procs.wait_gone(pid, 10.0), "daemon did not exit on SIGTERM"


def check_started(
    front: Front, task_id: str, bundle: Path, done: subprocess.CompletedProcess[bytes]
) -> int:
    """The start contract: exact stdout, address file, options.pb, Connect pid == shim.pid."""
    assert done.returncode == 0, done.stderr
    address = socket_address(front.address, NAMESPACE, task_id)
    assert done.stdout == address.encode()  # exactly, no newline
    assert done.stderr == b""
    assert (bundle / "address").read_text() == address
    assert (bundle / "options.pb").read_bytes() == OPTIONS
    pid = int((bundle / "shim.pid").read_text())
    assert procs.probe_connect(socket_path(address) or "", task_id, timeout=10.0) == pid
    assert procs.is_our_shim(pid, task_id)  # what `delete` checks before stopping it
    return pid


def test_c_sha256_matches_hashlib(tmp_path: Path) -> None:
    library = tmp_path / "sha.so"
    subprocess.run(
        ["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", str(library),
         str(REPO / "csrc/sha256.c")],
        check=True,
    )  # fmt: skip
    sha = ctypes.CDLL(str(library))
    for size in (0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000):
        data = os.urandom(size)
        out = ctypes.create_string_buffer(32)
        sha.ks_sha256(data, ctypes.c_size_t(size), out)
        assert out.raw == hashlib.sha256(data).digest(), size


def test_parse_request() -> None:
    data = frontchild.MAGIC + b"/b\x003\x00shim\x00-id\x00start\x00A=1\x00B=x=y\x00junk\x00"
    request = frontchild.parse_request(data)
    assert (request.cwd, request.argv) == ("/b", ["shim", "-id", "start"])
    assert request.env == {"A": "1", "B": "x=y"}
    for bad in (b"{}", frontchild.MAGIC + b"/b\x00x\x00", frontchild.MAGIC + b"/b\x005\x00a\x00"):
        with pytest.raises(ValueError):
            frontchild.parse_request(bad)


def test_start_and_delete_forked_without_python(front: Front) -> None:
    front.start_server()
    task_id, bundle = front.bundle()
    done = front.run(task_id, bundle, "start", OPTIONS)
    daemon = check_started(front, task_id, bundle, done)
    assert forked(daemon)
    argv = procs.cmdline(daemon) or []
    assert argv[:3] == [str(front.shim), "-namespace", NAMESPACE], argv
    assert procs.is_our_shim(daemon, task_id)
    stop_daemon(task_id, bundle)
    done = front.run(task_id, bundle, "delete")
    assert (done.returncode, done.stderr) == (0, b""), done.stderr
    response = task_pb2.DeleteResponse.FromString(done.stdout)
    assert (response.pid, response.exit_status) == (0, 137)
    assert response.SerializeToString() == done.stdout  # nothing else on stdout
    assert abs(response.exited_at.seconds - time.time()) < 60
    assert front.python_execs() == []  # neither action exec'd Python
    assert "cold exec" not in front.log()


def test_failure_status_and_stderr_come_back(front: Front) -> None:
    front.start_server()
    task_id, bundle = front.bundle(config=False)
    done = front.run(task_id, bundle, "start")
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"start failed" in done.stderr and b"config.json" in done.stderr
    assert front.python_execs() == []  # the failure happened in the forked child


def _no_server(front: Front) -> dict[str, str]:
    forkproto.make_fork_dir()  # the front notes in an existing directory only
    return {}


def _killed(front: Front) -> dict[str, str]:
    os.kill(front.start_server(), signal.SIGKILL)  # its socket file stays: refused
    return {}


def _disabled(front: Front) -> dict[str, str]:
    front.start_server()
    return {forkproto.ENABLE_ENV: "off"}


def _upgraded(front: Front) -> dict[str, str]:
    front.start_server()
    os.utime(Path(kata_shim.__file__).parent / "shim")  # what installing new files does
    return {}


def _other_mount_namespace(front: Front) -> dict[str, str]:
    forkproto.make_fork_dir()
    lock = os.open(front.paths["lock"], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    log = os.open(front.paths["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        env = {**os.environ, forkproto.ADDRESS_ENV: front.address}
        argv = ["unshare", "--mount", "--propagation", "private", "--"]
        argv += [sys.executable, "-m", "kata_shim.shim.forkserver"]
        actions = [(os.POSIX_SPAWN_DUP2, lock, 3), (os.POSIX_SPAWN_DUP2, log, 2)]
        os.posix_spawnp(argv[0], argv, env, file_actions=actions)
    finally:
        os.close(lock)
        os.close(log)
    front.wait_server()
    return {}


FALLBACKS = {
    "no-server": (_no_server, "not running (no socket)"),
    "killed": (_killed, "not running (socket refused)"),
    "disabled": (_disabled, ""),
    "upgraded": (_upgraded, "(upgraded): cold exec"),
    "other-mount-namespace": (_other_mount_namespace, "mount namespace"),
}


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_fallback_execs_python_with_the_same_contract(front: Front, case: str) -> None:
    prepare, why = FALLBACKS[case]
    env = prepare(front)
    task_id, bundle = front.bundle()
    done = front.run(task_id, bundle, "start", OPTIONS, **env)
    check_started(front, task_id, bundle, done)
    execs = front.python_execs()
    assert len(execs) == 1 and execs[0].endswith(f"-id {task_id} start"), execs
    if why:
        assert "kata-shim-front[" in front.log() and why in front.log(), front.log()
    stop_daemon(task_id, bundle)
    if case == "disabled":
        done = front.run(task_id, bundle, "delete", **env)
        assert done.returncode == 0 and task_pb2.DeleteResponse.FromString(done.stdout)
        assert front.python_execs()[-1].endswith(f"-id {task_id} delete")


def test_other_invocations_exec_python(front: Front) -> None:
    done = subprocess.run([str(front.shim), "--version"], capture_output=True, timeout=30)
    assert done.stdout.startswith(b"containerd-shim-kata-v2 (kata-shim) ")
    task_id, bundle = front.bundle()
    done = subprocess.run(  # iSulad's delete: no -address
        [str(front.shim), "--id", task_id, "--namespace", "isula", "delete"],
        cwd=bundle, capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and task_pb2.DeleteResponse.FromString(done.stdout)
    assert front.python_execs() == ["--version", f"--id {task_id} --namespace isula delete"]


class FakeServer:
    """One connection on the server's socket path, answered by `reply` (the front's peer)."""

    def __init__(self, front: Front, replies: list[bytes]) -> None:
        forkproto.make_fork_dir()
        Path(front.paths["log"]).touch()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(front.paths["socket"])
        self.sock.listen(1)
        self.replies = replies
        self.request = b""
        self.fds = 0
        self.got_go = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            self.request, fds = forkproto.receive_raw(conn, max_fds=3)
            self.fds = len(fds)
            for fd in fds:  # the front's stdio: holding it would keep its pipes open
                os.close(fd)
            for reply in self.replies:
                conn.send(reply)
                if reply == b"R":
                    self.got_go = conn.recv(16) == b"G"

    def close(self) -> None:
        self.thread.join(10)
        self.sock.close()


@pytest.mark.parametrize(
    ("replies", "why"),
    [([b'{"error": "nope"}'], "refused: nope"), ([], "closed the connection")],
)
def test_refusal_or_silence_before_go_falls_back(
    front: Front, replies: list[bytes], why: str
) -> None:
    server = FakeServer(front, replies)
    try:
        task_id, bundle = front.bundle()
        done = front.run(task_id, bundle, "delete")
    finally:
        server.close()
    assert done.returncode == 0 and task_pb2.DeleteResponse.FromString(done.stdout)
    assert front.python_execs() == [
        f"-namespace {NAMESPACE} -address {front.address} "
        f"-publish-binary /bin/true -id {task_id} delete"
    ]
    assert f"delete: fork server {why}: cold exec" in front.log(), front.log()


def test_lost_child_after_go_is_an_error_never_a_rerun(front: Front) -> None:
    server = FakeServer(front, [b"R"])  # then the "child" dies without an exit status
    try:
        task_id, bundle = front.bundle()
        done = front.run(task_id, bundle, "delete")
    finally:
        server.close()
    assert server.got_go
    assert done.returncode == 1 and done.stdout == b""
    assert b"lost the fork server's child" in done.stderr
    assert front.python_execs() == []
    request = frontchild.parse_request(server.request)
    assert request.cwd == str(bundle)
    assert request.argv == [
        str(front.shim),
        "-namespace",
        NAMESPACE,
        "-address",
        front.address,
        "-publish-binary",
        "/bin/true",
        "-id",
        task_id,
        "delete",
    ]
    assert request.env["CFRONT_MARK"] == "x"
    assert server.fds == 3


def _action_child(front: Front, task_id: str) -> int | None:
    """The server's child running our `start` (its command line is the front's)."""
    for pid in front.server_pids():
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            for child in map(int, handle.read().split()):
                argv = procs.cmdline(child) or []
                if argv[:1] == [str(front.shim)] and argv[-2:] == [task_id, "start"]:
                    return child
    return None


def _held_start(front: Front, out: str) -> tuple[str, Path, subprocess.Popen[bytes], int]:
    """A forked `start` held in its action child (it waits for its options on stdin):
    (task id, bundle, the front, the action child's pid); `out`: "stdout" or "stderr" piped."""
    task_id, bundle = front.bundle()
    argv = [str(front.shim), "-namespace", NAMESPACE, "-address", front.address]
    argv += ["-publish-binary", "/bin/true", "-id", task_id, "start"]
    env = {**os.environ, forkproto.ENABLE_ENV: "on"}
    shim = subprocess.Popen(
        argv, cwd=bundle, env=env, stdin=subprocess.PIPE, **{out: subprocess.PIPE}
    )
    deadline = time.monotonic() + 30
    while (child := _action_child(front, task_id)) is None:
        if time.monotonic() > deadline:
            shim.kill()
            shim.wait()
            if (bundle / "shim.pid").exists():  # a daemon came up some other way (cold)
                front.daemons.append(int((bundle / "shim.pid").read_text()))
            raise AssertionError("no action child")
        time.sleep(0.02)
    return task_id, bundle, shim, child


def test_action_child_holds_only_stdio_and_its_connection(front: Front) -> None:
    front.start_server()
    task_id, bundle, shim, child = _held_start(front, "stdout")
    try:
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{child}/fd"))
        assert fds == [0, 1, 2, 3], fds
        flags = Path(f"/proc/{child}/fdinfo/3").read_text().split("flags:")[1].split()[0]
        assert int(flags, 8) & os.O_CLOEXEC  # the connection never reaches an exec'd child
        assert os.readlink(f"/proc/{child}/fd/0") == os.readlink(f"/proc/{shim.pid}/fd/0")
        out, _ = shim.communicate(OPTIONS, timeout=60)
    finally:
        if shim.poll() is None:
            shim.kill()
            shim.wait()
    assert (
        shim.returncode == 0 and out == socket_address(front.address, NAMESPACE, task_id).encode()
    )
    front.daemons.append(int((bundle / "shim.pid").read_text()))
    assert (bundle / "options.pb").read_bytes() == OPTIONS
    assert front.python_execs() == []


def test_action_child_crash_fails_only_that_action(front: Front) -> None:
    server = front.start_server()
    _, _, shim, child = _held_start(front, "stderr")
    try:
        os.kill(child, signal.SIGKILL)  # mid-action (it waits for its options)
        _, err = shim.communicate(timeout=60)
    finally:
        if shim.poll() is None:
            shim.kill()
            shim.wait()
    assert shim.returncode == 1 and b"lost the fork server's child" in err
    assert front.python_execs() == []  # not re-run through Python
    assert procs.is_alive(server)
    again, bundle = front.bundle()
    done = front.run(again, bundle, "start", OPTIONS)
    assert forked(check_started(front, again, bundle, done))
    assert front.server_pids() == [server] and front.python_execs() == []
