"""Serve mode as a real process: ttrpc on -socket, logs into the bundle's FIFO, clean exits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.proto import task_pb2
from kata_shim.proto.task_ttrpc import TaskClient
from kata_shim.ttrpc.client import Client
from tests.shim.conftest import make_bundle, unique_id

pytestmark = pytest.mark.timeout(60)


class Daemon:
    def __init__(self, proc: subprocess.Popen[bytes], sock: str, log_fd: int, task_id: str):
        self.proc, self.sock, self.log_fd, self.task_id = proc, sock, log_fd, task_id

    def log_text(self) -> str:
        chunks = []
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.log_fd, 65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short, world-traversable dir (pytest's tmp is 0700 and paths may get long)."""
    path = Path(tempfile.mkdtemp(prefix="kst-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(shim_bin: Path, tmp_path: Path, sock_dir: Path) -> Iterator[Daemon]:
    task_id = unique_id()
    bundle = make_bundle(tmp_path, task_id)
    (bundle / "log").unlink()
    os.mkfifo(bundle / "log")
    log_fd = os.open(bundle / "log", os.O_RDWR | os.O_NONBLOCK)  # as containerd opens it
    sock = str(sock_dir / "s.sock")
    argv = [str(shim_bin), "-namespace", "kstest", "-id", task_id, "-socket", sock]
    proc = subprocess.Popen(argv, cwd=bundle, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(sock):
            assert proc.poll() is None, "daemon died at startup"
            assert time.monotonic() < deadline, "daemon never listened"
            time.sleep(0.02)
        yield Daemon(proc, sock, log_fd, task_id)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()
        os.close(log_fd)


async def _call(sock: str, method: str, request: object) -> object:
    client = await Client.connect_unix(sock, timeout=5)
    try:
        return await getattr(TaskClient(client), method)(request, timeout=10)
    finally:
        client.close()
        await client.wait_closed()


def test_connect_then_shutdown_exits_cleanly(daemon: Daemon) -> None:
    reply = asyncio.run(_call(daemon.sock, "Connect", task_pb2.ConnectRequest(id=daemon.task_id)))
    assert isinstance(reply, task_pb2.ConnectResponse)
    assert reply.shim_pid == daemon.proc.pid
    with contextlib.suppress(Exception):  # the reply may or may not arrive before the close
        asyncio.run(_call(daemon.sock, "Shutdown", task_pb2.ShutdownRequest(id=daemon.task_id)))
    assert daemon.proc.wait(10) == 0
    assert not os.path.exists(daemon.sock)
    assert daemon.proc.stdout is not None and daemon.proc.stdout.read() == b""  # never stdout
    text = daemon.log_text()
    assert f"kata-shim[{daemon.proc.pid}] ns=kstest id={daemon.task_id}" in text
    assert "serving on" in text and "Shutdown with no task left" in text


def test_sigterm_exits_cleanly(daemon: Daemon) -> None:
    asyncio.run(_call(daemon.sock, "Connect", task_pb2.ConnectRequest(id=daemon.task_id)))
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    assert not os.path.exists(daemon.sock)
    assert "received SIGTERM" in daemon.log_text()


def test_peer_with_another_uid_is_rejected(daemon: Daemon) -> None:
    os.chmod(daemon.sock, 0o777)  # get past file permissions: SO_PEERCRED must still refuse
    request = struct.pack(">IIBB", 0, 1, 1, 0)
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
        "try:\n"
        "    s.sendall(bytes.fromhex(sys.argv[2])); print(len(s.recv(100)))\n"
        "except (BrokenPipeError, ConnectionResetError):\n"
        "    print(0)\n"
    )
    result = subprocess.run(
        ["python3", "-c", code, daemon.sock, request.hex()],
        user=65534,
        capture_output=True,
        timeout=10,
    )
    assert result.stdout.strip() == b"0", result.stderr  # closed without an answer
    assert "rejecting ttrpc peer" in daemon.log_text()
    with socket.socket(socket.AF_UNIX) as ours:  # same uid still served
        ours.connect(daemon.sock)
