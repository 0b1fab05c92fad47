"""The stdio copy loop: compiled (kata_shim._fastio) when built, else pure Python.

Both implementations have identical signatures and semantics, and the same
algorithm step by step; `IMPLEMENTATION` says which one `copy_fd`, `write_all`,
`read_some` and `drain_into` are, and the pure-Python ones stay importable as
`py_*` so tests can run both. Rules: copy_fd splices only from a non-pipe into a
pipe (file/socket → FIFO; measured faster there, slower for pipe sources) and
falls back to read/write when splice(2) says EINVAL/ENOSYS; other pairings use
read/write; EINTR runs signal handlers and retries (PEP 475);
EAGAIN on a non-blocking fd waits with poll(); errors raise OSError(errno);
read_some/drain_into raise BlockingIOError on EAGAIN, like os.read.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import os
import select
import stat
from types import ModuleType

__all__ = [
    "IMPLEMENTATION",
    "copy_fd",
    "drain_into",
    "grow_pipe",
    "py_copy_fd",
    "py_drain_into",
    "py_read_some",
    "py_write_all",
    "read_some",
    "write_all",
]

_UNSUPPORTED = -2  # splice(2) refused these fds: use read/write
_NO_SPLICE = (errno.EINVAL, errno.ENOSYS)


def _wait(fd: int, events: int) -> None:
    """Block until fd is ready for events (or has an error/hangup to report)."""
    poller = select.poll()
    poller.register(fd, events)
    poller.poll()


def _ready(fd: int, events: int) -> bool:
    poller = select.poll()
    poller.register(fd, events)
    try:
        return bool(poller.poll(0))
    except OSError:
        return True  # the retry reports it


def _wait_splice(src: int, dst: int) -> None:
    """splice said EAGAIN: wait for whichever side blocked it (dst full, else src empty)."""
    if not _ready(dst, select.POLLOUT):
        _wait(dst, select.POLLOUT)
    else:
        _wait(src, select.POLLIN)


def _read(fd: int, size: int) -> bytes:
    """One read (EAGAIN waited out); b"" at EOF."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            _wait(fd, select.POLLIN)


def _splice(src: int, dst: int, count: int) -> int:
    """One splice (EAGAIN waited out); 0 at EOF; _UNSUPPORTED on EINVAL/ENOSYS."""
    while True:
        try:
            return os.splice(src, dst, count)
        except BlockingIOError:
            _wait_splice(src, dst)
        except OSError as exc:
            if exc.errno in _NO_SPLICE:
                return _UNSUPPORTED
            raise


def _is_pipe(fd: int) -> bool:
    return stat.S_ISFIFO(os.fstat(fd).st_mode)


class _Copy:
    """One copy_fd call: the fds and the byte budget."""

    __slots__ = ("bufsize", "dst", "limit", "src", "total")

    def __init__(self, src: int, dst: int, limit: int, bufsize: int) -> None:
        self.src, self.dst, self.limit, self.bufsize = src, dst, limit, bufsize
        self.total = 0  # bytes written to dst so far

    def more(self) -> bool:
        return self.limit < 0 or self.total < self.limit

    def want(self) -> int:
        return self.bufsize if self.limit < 0 else min(self.bufsize, self.limit - self.total)

    def copy_rw(self) -> None:
        while self.more():
            chunk = _read(self.src, self.want())
            if not chunk:
                break
            py_write_all(self.dst, chunk)
            self.total += len(chunk)

    def splice_direct(self) -> bool:
        """dst is a pipe, src is not. True when splice is unsupported (nothing was moved)."""
        while self.more():
            moved = _splice(self.src, self.dst, self.want())
            if moved == _UNSUPPORTED:
                return True
            if moved == 0:
                break
            self.total += moved
        return False

    def run(self) -> int:
        if self.limit == 0:
            return 0
        if _is_pipe(self.dst) and not _is_pipe(self.src) and not self.splice_direct():
            return self.total
        self.copy_rw()
        return self.total


def py_copy_fd(src_fd: int, dst_fd: int, limit: int = -1, bufsize: int = 1 << 20) -> int:
    """Copy src → dst until EOF (or `limit` bytes, < 0 = no limit); return the byte count."""
    if bufsize <= 0:
        raise ValueError("bufsize must be positive")
    return _Copy(src_fd, dst_fd, limit, bufsize).run()


def py_write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write all of `data` (bytes-like); return its length."""
    with memoryview(data) as outer, outer.cast("B") as view:
        done = 0
        while done < len(view):
            try:
                done += os.write(fd, view[done:])
            except BlockingIOError:
                _wait(fd, select.POLLOUT)
        return len(view)


def py_read_some(fd: int, maxlen: int) -> bytes:
    """One read() of up to maxlen bytes; b"" at EOF; BlockingIOError on EAGAIN."""
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0")
    return os.read(fd, maxlen)


def py_drain_into(fd: int, buf: bytearray, maxlen: int) -> int:
    """Append one read() of up to maxlen bytes to buf; return the count (0 = EOF)."""
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0")
    chunk = os.read(fd, maxlen)  # copies only what was read (a zeroed readv target costs more)
    buf += chunk
    return len(chunk)


PIPE_SIZE = 1 << 20  # the default /proc/sys/fs/pipe-max-size


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> int:
    """Best effort: enlarge the pipe/FIFO behind fd (fewer, larger copies); return its size.

    Never shrinks it. Not a pipe (0 is returned), or over the caller's limits
    (pipe-max-size, EPERM): left as it is.
    """
    try:
        current = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError:
        return 0
    if current >= size or size >= 1 << 31:  # F_SETPIPE_SZ takes an int
        return current
    try:
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        return current


def _compiled() -> ModuleType | None:
    try:
        return importlib.import_module("kata_shim._fastio")
    except ImportError:  # pragma: no cover - only when the extension is not built
        return None


# the selected implementation (typed as the pure-Python twin, which has the same signature)
copy_fd, write_all, read_some, drain_into = py_copy_fd, py_write_all, py_read_some, py_drain_into
IMPLEMENTATION = "python"
_fastio = _compiled()
if _fastio is not None:
    copy_fd, write_all = _fastio.copy_fd, _fastio.write_all
    read_some, drain_into = _fastio.read_some, _fastio.drain_into
    IMPLEMENTATION = "cython"
