"""Finding and stopping the processes a dead (or dying) shim left behind, via /proc.

Rules: a pid from a file is trusted only after /proc/<pid>/cmdline proves it is
our daemon for this task id (pids get recycled); zombies count as gone; every
wait is bounded; we never signal ourselves. `probe_connect` asks a shim over
its socket whether it still serves (a raw ttrpc Task.Connect, stdlib only).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import time

from kata_shim.shim.minipb import bytes_field, parse_fields, varint_field

__all__ = [
    "cmdline",
    "is_alive",
    "is_our_shim",
    "kill_processes",
    "pids_referencing",
    "probe_connect",
    "stop_process",
    "wait_gone",
]

SHIM_MARKERS = ("containerd-shim-kata-v2", "kata_shim.shim.main")
_HEADER = struct.Struct(">IIBB")


def cmdline(pid: int) -> list[str] | None:
    """argv of `pid` (None when gone or a zombie, whose cmdline is empty)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    if not raw:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"")


def _flag_value(argv: list[str], name: str) -> str | None:
    for index, arg in enumerate(argv):
        for prefix in (f"-{name}", f"--{name}"):
            if arg == prefix and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(prefix + "="):
                return arg[len(prefix) + 1 :]
    return None


def is_our_shim(pid: int, task_id: str) -> bool:
    """Is `pid` a kata-shim daemon (no action) started for `task_id`?"""
    argv = cmdline(pid)
    if not argv or pid == os.getpid():
        return False
    if not any(marker in arg for arg in argv for marker in SHIM_MARKERS):
        return False
    if "start" in argv or "delete" in argv:
        return False
    return _flag_value(argv, "id") == task_id


def wait_gone(pid: int, timeout: float) -> bool:
    """True once `pid` exited (zombie or gone), False after `timeout`. Woken by a pidfd (readable
    when that very process exited, whoever reaps it); polled where there is none."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd here (ENOSYS, EPERM under a seccomp policy): poll
        return _poll_gone(pid, timeout)
    try:
        readable, _, _ = select.select([fd], [], [], max(0.0, timeout))
        return bool(readable)
    finally:
        os.close(fd)


def _poll_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_process(pid: int, term_wait: float = 1.0, kill_wait: float = 0.5) -> bool:
    """SIGTERM, then SIGKILL after `term_wait`; True once the process is gone."""
    _signal(pid, signal.SIGTERM)
    if wait_gone(pid, term_wait):
        return True
    _signal(pid, signal.SIGKILL)
    return wait_gone(pid, kill_wait)


def pids_referencing(path: str) -> list[int]:
    """Pids whose argv mentions `path` or something below it (never our own)."""
    below = path.rstrip("/") + "/"
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        argv = cmdline(int(name))
        if argv and any(below in arg or arg.endswith(path) for arg in argv):
            found.append(int(name))
    return found


def kill_processes(pids: list[int], wait: float = 1.0) -> None:
    """SIGKILL each pid (and its process group when it leads one); wait for them, bounded."""
    for pid in pids:
        try:
            if os.getpgid(pid) == pid and pid != os.getpgid(0):
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    for pid in pids:
        wait_gone(pid, max(0.0, deadline - time.monotonic()))


def _connect_request(task_id: str, timeout: float) -> bytes:
    payload = bytes_field(1, task_id.encode())
    request = (
        bytes_field(1, b"containerd.task.v2.Task")
        + bytes_field(2, b"Connect")
        + bytes_field(3, payload)
        + varint_field(4, int(timeout * 1e9))
    )
    return _HEADER.pack(len(request), 1, 1, 0) + request


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def probe_connect(path: str, task_id: str, timeout: float = 0.5) -> int | None:
    """shim_pid from a Task.Connect on the socket at `path`; None if it does not answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(_connect_request(task_id, timeout))
        length, _, kind, _ = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
        response = parse_fields(_recv_exact(sock, length))
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    if kind != 2:
        return None
    payload = next((v for v in response.get(2, []) if isinstance(v, bytes)), b"")
    try:
        shim_pid = parse_fields(payload).get(1, [0])[0]
    except ValueError:
        return None
    return shim_pid if isinstance(shim_pid, int) and shim_pid > 0 else None
