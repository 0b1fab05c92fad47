"""The stdio copy loop: compiled (kata_shim._fastio) when built, else pure Python.

Both implementations have identical signatures and semantics; `IMPLEMENTATION`
says which one `copy_fd`, `write_all`, `read_some` and `drain_into` are, and
the pure-Python ones stay importable as `py_*` so tests can compare the two.
Semantics: EINTR retried; EAGAIN on a non-blocking fd waits with poll();
errors raise OSError with the errno; read_some raises BlockingIOError on EAGAIN.
"""

from __future__ import annotations

import os
import select

__all__ = [
    "IMPLEMENTATION",
    "copy_fd",
    "drain_into",
    "py_copy_fd",
    "py_drain_into",
    "py_read_some",
    "py_write_all",
    "read_some",
    "write_all",
]


def _wait(fd: int, events: int) -> None:
    poller = select.poll()
    poller.register(fd, events)
    poller.poll()


def _read_blocking(fd: int, size: int) -> bytes:
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            _wait(fd, select.POLLIN)


def py_write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write all of `data`; return its length."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        try:
            done += os.write(fd, view[done:])
        except BlockingIOError:
            _wait(fd, select.POLLOUT)
    return len(view)


def py_copy_fd(src_fd: int, dst_fd: int, limit: int = -1, bufsize: int = 1 << 20) -> int:
    """Copy src → dst until EOF (or `limit` bytes); return the byte count."""
    if bufsize <= 0:
        raise ValueError("bufsize must be positive")
    total = 0
    while limit < 0 or total < limit:
        want = bufsize if limit < 0 else min(bufsize, limit - total)
        chunk = _read_blocking(src_fd, want)
        if not chunk:
            break
        py_write_all(dst_fd, chunk)
        total += len(chunk)
    return total


def py_read_some(fd: int, maxlen: int) -> bytes:
    """One read() of up to maxlen bytes; b"" at EOF; BlockingIOError on EAGAIN."""
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0")
    return os.read(fd, maxlen)


def py_drain_into(fd: int, buf: bytearray, maxlen: int) -> int:
    """Append one read() of up to maxlen bytes to buf; return the count (0 = EOF)."""
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0")
    chunk = os.read(fd, maxlen)
    buf += chunk
    return len(chunk)


try:
    from kata_shim._fastio import copy_fd, drain_into, read_some, write_all

    IMPLEMENTATION = "cython"
except ImportError:  # pragma: no cover - only when the extension is not built
    copy_fd = py_copy_fd
    write_all = py_write_all
    read_some = py_read_some
    drain_into = py_drain_into
    IMPLEMENTATION = "python"
