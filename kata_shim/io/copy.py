"""The stdio read step and pipe sizing, shared by the host pumps and the guest agent.

`read_some(fd, maxlen)`: one read() of up to maxlen bytes, b"" at EOF,
BlockingIOError on EAGAIN — compiled (kata_shim._fastio, see there why it beats
os.read for large maxlen) when built, else `py_read_some` (os.read);
`IMPLEMENTATION` says which. `grow_pipe` enlarges a pipe so one read or write
moves a whole chunk.
"""

from __future__ import annotations

import fcntl
import importlib
import os
from collections.abc import Callable

__all__ = ["IMPLEMENTATION", "PIPE_SIZE", "grow_pipe", "py_read_some", "read_some"]


def py_read_some(fd: int, maxlen: int) -> bytes:
    """One read() of up to maxlen bytes; b"" at EOF; BlockingIOError on EAGAIN."""
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0")
    return os.read(fd, maxlen)


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


def _compiled() -> Callable[[int, int], bytes] | None:
    try:
        module = importlib.import_module("kata_shim._fastio")
    except ImportError:  # pragma: no cover - only when the extension is not built
        return None
    compiled: Callable[[int, int], bytes] = module.read_some
    return compiled


read_some: Callable[[int, int], bytes] = _compiled() or py_read_some
IMPLEMENTATION = "python" if read_some is py_read_some else "cython"
