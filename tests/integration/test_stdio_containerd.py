"""Stdio exactness through a real containerd and our shim (local sandbox), issue #6.

Every byte a container writes reaches the client, every byte the client writes
reaches the container, stdin EOF ends `cat`, a terminal's size is the client's,
and a client that stops reading never makes Kill/Delete hang. Large payloads are
hashed as they stream, never held in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.shim import KataRig
from tests.integration.test_shim_containerd import (
    _out,
    assert_clean,
    kill_and_remove,
    remove,
    start_sleeper,
    wait_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MiB = 1 << 20


@pytest.fixture
def rig() -> Iterator[KataRig]:
    with KataRig() as rig:
        yield rig


def ctr_cmd(rig: KataRig, *args: str) -> list[str]:
    return ["ctr", "--address", rig.containerd.address, *args]


def stream_sha256(proc: subprocess.Popen[bytes]) -> tuple[str, int]:
    """sha256 and length of everything `proc` writes to its stdout pipe, until EOF."""
    assert proc.stdout is not None
    digest, total = hashlib.sha256(), 0
    while chunk := proc.stdout.read1(MiB):
        digest.update(chunk)
        total += len(chunk)
    return digest.hexdigest(), total


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def data_mount(directory: Path) -> str:
    return f"type=bind,src={directory},dst=/data,options=rbind:rw"


@pytest.mark.slow
def test_1000_consecutive_echo_execs_and_50_runs_lose_no_line(rig: KataRig) -> None:
    task_id = start_sleeper(rig, "lines")
    lost = []
    for n in range(1000):
        result = rig.ctr("task", "exec", "--exec-id", f"e{n}", task_id, "/bin/echo", f"line-{n}")
        if result.returncode != 0 or result.stdout != f"line-{n}\n".encode():
            lost.append((n, _out(result)))
    assert not lost, f"{len(lost)} of 1000 execs lost output, first: {lost[:3]}"
    kill_and_remove(rig, task_id)
    for n in range(50):  # the run path: a new shim and sandbox each time
        result = rig.ctr(*rig.run_args(rig.id(f"run{n}"), ["/bin/echo", f"line-{n}"], "--rm"))
        assert result.stdout == f"line-{n}\n".encode(), (n, _out(result))
    assert_clean(rig)


def test_256_mib_from_urandom_arrive_with_the_same_sha256(rig: KataRig) -> None:
    shared = rig.work / "data"
    shared.mkdir()
    task_id = rig.id("big")
    # dd's stdout goes through the shim; tee keeps a copy to compare with
    script = "dd if=/dev/urandom iflag=fullblock bs=1048576 count=256 2>/dev/null | tee /data/blob"
    args = rig.run_args(task_id, ["/bin/sh", "-c", script], "--rm", "--mount", data_mount(shared))
    with subprocess.Popen(ctr_cmd(rig, *args), stdout=subprocess.PIPE) as proc:
        received, length = stream_sha256(proc)
        assert proc.wait(120) == 0
    assert length == 256 * MiB
    assert received == file_sha256(shared / "blob")
    assert_clean(rig)


def test_64_mib_stdin_round_trip_through_cat(rig: KataRig) -> None:
    source = rig.work / "stdin.bin"
    with source.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB))
    task_id = rig.id("cat")
    args = rig.run_args(task_id, ["/bin/cat"], "--rm")  # ctr 1.6 always attaches stdin
    with (
        source.open("rb") as stdin,
        subprocess.Popen(ctr_cmd(rig, *args), stdin=stdin, stdout=subprocess.PIPE) as proc,
    ):
        received, length = stream_sha256(proc)
        assert proc.wait(60) == 0
    assert (length, received) == (64 * MiB, file_sha256(source))
    assert_clean(rig)


def test_piped_exec_terminates_and_execs_without_stdin_never_hang(rig: KataRig) -> None:
    """ctr 1.6 has no -i: it always attaches its stdin; `--null-io` gives the process no
    stdin at all. (`ctr task exec … cat </dev/null` hangs with runc-v2 as with us: ctr
    closes its stdin FIFO unopened and skips CloseIO when EOF comes before Exec returns.)"""
    task_id = start_sleeper(rig, "stdin")
    piped = subprocess.run(
        ctr_cmd(rig, "task", "exec", "--exec-id", "in1", task_id, "/bin/cat"),
        input=b"hi\n", capture_output=True, timeout=20,
    )  # fmt: skip
    assert (piped.returncode, piped.stdout) == (0, b"hi\n"), piped
    kill_and_remove(rig, task_id)
    began = time.monotonic()
    null_io = rig.ctr(*rig.run_args(rig.id("nullio"), ["/bin/cat"], "--rm", "--null-io"))
    assert null_io.returncode == 0, _out(null_io)  # no stdin at all: the guest sees EOF
    assert time.monotonic() - began < 10
    assert_clean(rig)


def _set_winsize(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _read_until(master: int, needle: bytes, timeout: float) -> bytes:
    output, deadline = b"", time.monotonic() + timeout
    while needle not in output and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    return output


def test_tty_exec_sees_the_client_size_and_its_resizes(rig: KataRig) -> None:
    task_id = start_sleeper(rig, "winsz")
    master, slave = pty.openpty()
    _set_winsize(slave, 33, 101)
    # ctr sends the initial size right after Start: only ask once "ready" was seen
    script = "echo ready; read a; stty size; read b; stty size; exit 0"
    cmd = ctr_cmd(rig, "task", "exec", "-t", "--exec-id", "tty1", task_id, "/bin/sh", "-c", script)
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        assert b"ready" in _read_until(master, b"ready", 20)
        time.sleep(0.5)  # ctr → shim ResizePty → agent TtyWinResize
        os.write(master, b"1\n")
        first = _read_until(master, b"33 101", 20)
        assert b"33 101" in first, first
        _set_winsize(master, 47, 132)  # what a terminal emulator does; ctr gets SIGWINCH
        proc.send_signal(signal.SIGWINCH)
        time.sleep(0.5)
        os.write(master, b"2\n")
        second = _read_until(master, b"47 132", 20)
        assert b"47 132" in second, second
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
    kill_and_remove(rig, task_id)
    assert_clean(rig)


def test_stalled_reader_does_not_block_kill_or_delete(rig: KataRig) -> None:
    """ctr stops reading (SIGSTOP) while the container floods stdout: the FIFO and our
    sink fill up; Kill, the exit and Delete must still complete, bounded."""
    task_id = rig.id("stall")
    args = rig.run_args(task_id, ["/bin/sh", "-c", "yes flood-line"])
    with subprocess.Popen(ctr_cmd(rig, *args), stdout=subprocess.PIPE) as reader:
        try:
            wait_status(rig, task_id, "RUNNING")
            time.sleep(1)
            reader.send_signal(signal.SIGSTOP)  # the client stops reading its FIFO
            time.sleep(2)  # pipes and FIFO fill; the shim's writes now wait
            began = time.monotonic()
            killed = rig.ctr("task", "kill", "-s", "SIGKILL", task_id, timeout=30)
            assert killed.returncode == 0, _out(killed)
            wait_status(rig, task_id, "STOPPED", timeout=30)
            deleted = remove(rig, task_id)
            assert deleted.returncode == 0, _out(deleted)
            elapsed = time.monotonic() - began
            assert elapsed < 20, f"kill + exit + delete took {elapsed:.1f}s with a stalled reader"
        finally:
            reader.kill()  # ours; SIGKILL works on a stopped process
    assert_clean(rig)
