"""epoll through the cffi module kata_shim._native, with select.epoll as the fallback.

Two layers, each with a native and a pure-Python implementation of identical
signatures and results:
* fd level: `epoll_create(cloexec)`, `epoll_ctl(epfd, op, fd, events)` and
  `epoll_wait(epfd, maxevents, timeout_ms) -> [(fd, events)]` (`native_*` / `py_*`);
* object level: `NativeEpoll` / `PyEpoll`, shaped like select.epoll (register, modify,
  unregister, poll, close, fileno, closed, context manager), same argument checks and
  messages, same errors (OSError(errno) from the syscall).
EINTR is retried with the remaining timeout after Python signal handlers ran (PEP 475).
`Epoll`, `epoll_*` and `IMPLEMENTATION` name the native one when the module is built.
Only this module and vsock.py touch the cffi `ffi`/`lib` objects.
"""

from __future__ import annotations

import errno
import math
import operator
import os
import select
import time
from types import TracebackType
from typing import Any, Protocol, Self

from kata_shim.native import native_lib

__all__ = [
    "EPOLL_CTL_ADD",
    "EPOLL_CTL_DEL",
    "EPOLL_CTL_MOD",
    "IMPLEMENTATION",
    "Epoll",
    "NativeEpoll",
    "PyEpoll",
    "epoll_create",
    "epoll_ctl",
    "epoll_wait",
    "native_epoll_create",
    "native_epoll_ctl",
    "native_epoll_wait",
    "py_epoll_create",
    "py_epoll_ctl",
    "py_epoll_wait",
]

_ffi, _lib = native_lib()

EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3  # epoll_ctl(2) ops (not in select)
_INT_MAX = 2**31 - 1
_DEFAULT_MAXEVENTS = 1023  # select.epoll's FD_SETSIZE - 1 for maxevents=-1
_DEFAULT_MASK = select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT  # select.epoll's default


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


# ---------------------------------------------------------------- shared argument checks
def _check_fd(fd: int, what: str = "fd") -> int:
    fd = operator.index(fd)
    if not 0 <= fd <= _INT_MAX:
        raise ValueError(f"{what} must be in 0..{_INT_MAX}, got {fd}")
    return fd


def _c_int(value: int) -> int:
    value = operator.index(value)
    if not -_INT_MAX - 1 <= value <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    return value


def _check_maxevents(maxevents: int) -> int:
    maxevents = _c_int(maxevents)
    if maxevents < 1:
        raise ValueError(f"maxevents must be greater than 0, got {maxevents}")
    return maxevents


def _check_ctl(epfd: int, op: int, fd: int, events: int) -> tuple[int, int, int, int]:
    if op not in (EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD):
        raise ValueError(f"unknown epoll_ctl op {op!r}")
    mask = operator.index(events) & 0xFFFFFFFF
    return _check_fd(epfd, "epfd"), op, _check_fd(fd), mask


def _check_timeout_ms(timeout_ms: int) -> int:
    timeout_ms = operator.index(timeout_ms)
    if not -_INT_MAX - 1 <= timeout_ms <= _INT_MAX:
        raise OverflowError("timeout is too large")
    return timeout_ms


def _raise(rc: int) -> int:
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc))
    return rc


# ---------------------------------------------------------------- fd level, native
def native_epoll_create(cloexec: bool = True) -> int:
    """A new epoll fd (CLOEXEC unless cloexec is false)."""
    return _raise(_native().ks_epoll_create(1 if cloexec else 0))


def native_epoll_ctl(epfd: int, op: int, fd: int, events: int) -> None:
    """epoll_ctl(2); the event's data is the fd itself (as select.epoll does)."""
    epfd, op, fd, events = _check_ctl(epfd, op, fd, events)
    _raise(_native().ks_epoll_ctl(epfd, op, fd, events))


def native_epoll_wait(epfd: int, maxevents: int, timeout_ms: int) -> list[tuple[int, int]]:
    """Ready (fd, events); timeout_ms < 0 waits forever; EINTR retried with the time left."""
    epfd, maxevents = _check_fd(epfd, "epfd"), _check_maxevents(maxevents)
    timeout_ms = _check_timeout_ms(timeout_ms)
    lib = _native()
    fds, events = _ffi.new("int[]", maxevents), _ffi.new("uint32_t[]", maxevents)
    deadline = time.monotonic_ns() + timeout_ms * 1_000_000 if timeout_ms >= 0 else None
    while True:
        n = lib.ks_epoll_wait(epfd, fds, events, maxevents, timeout_ms)
        if n != -errno.EINTR:
            break
        if deadline is not None:  # signal handlers have run by now (PEP 475)
            left = deadline - time.monotonic_ns()
            if left < 0:
                return []
            timeout_ms = -(-left // 1_000_000)
    return [(fds[i], events[i]) for i in range(_raise(n))]


def _native() -> Any:
    if _lib is None:
        raise ImportError("kata_shim._native is not built")
    return _lib


# ---------------------------------------------------------------- fd level, select.epoll
def _borrow(epfd: int) -> select.epoll:
    """A select.epoll on a dup of epfd (same epoll instance; closing it leaves epfd open)."""
    return select.epoll.fromfd(os.dup(epfd))


def py_epoll_create(cloexec: bool = True) -> int:
    """A new epoll fd (CLOEXEC unless cloexec is false)."""
    with select.epoll() as ep:
        fd = os.dup(ep.fileno())  # os.dup: non-inheritable, i.e. CLOEXEC
    if not cloexec:
        os.set_inheritable(fd, True)
    return fd


def py_epoll_ctl(epfd: int, op: int, fd: int, events: int) -> None:
    """epoll_ctl(2); the event's data is the fd itself (as select.epoll does)."""
    epfd, op, fd, events = _check_ctl(epfd, op, fd, events)
    with _borrow(epfd) as ep:
        if op == EPOLL_CTL_ADD:
            ep.register(fd, events)
        elif op == EPOLL_CTL_MOD:
            ep.modify(fd, events)
        else:
            ep.unregister(fd)


def py_epoll_wait(epfd: int, maxevents: int, timeout_ms: int) -> list[tuple[int, int]]:
    """Ready (fd, events); timeout_ms < 0 waits forever; EINTR retried with the time left."""
    epfd, maxevents = _check_fd(epfd, "epfd"), _check_maxevents(maxevents)
    timeout_ms = _check_timeout_ms(timeout_ms)
    with _borrow(epfd) as ep:
        return ep.poll(_seconds(timeout_ms) if timeout_ms >= 0 else -1, maxevents)


def _seconds(timeout_ms: int) -> float:
    """The largest float of seconds that select.epoll turns back into exactly timeout_ms."""
    seconds = timeout_ms / 1000  # e.g. 0.067 * 1e9 rounds up to 67000001 ns, i.e. 68 ms
    while seconds > 0 and math.ceil(seconds * 1e9) > timeout_ms * 1_000_000:
        seconds = math.nextafter(seconds, 0.0)
    return seconds


# ---------------------------------------------------------------- object level
def _as_fd(obj: int | _HasFileno) -> int:
    """select's PyObject_AsFileDescriptor rules, messages included."""
    if isinstance(obj, int):
        fd = obj
    elif callable(getattr(obj, "fileno", None)):
        fd = obj.fileno()
        if not isinstance(fd, int):
            raise TypeError("fileno() returned a non-integer")
    else:
        raise TypeError("argument must be an int, or have a fileno() method.")
    if not -_INT_MAX - 1 <= fd <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return int(fd)


def _poll_timeout_ms(timeout: float | None) -> int:
    """select.epoll.poll's seconds → milliseconds: ns rounded away from zero, ms ceiling."""
    if timeout is None:
        return -1
    if isinstance(timeout, float):
        if math.isnan(timeout):
            raise ValueError("Invalid value NaN (not a number)")
        ns_f = timeout * 1e9
        if not -(2.0**63) <= ns_f < 2.0**63:
            raise OverflowError("timestamp too large to convert to C _PyTime_t")
        ns = math.ceil(ns_f) if ns_f >= 0 else math.floor(ns_f)
    elif isinstance(timeout, int):
        ns = timeout * 1_000_000_000
        if not -(2**63) <= ns < 2**63:
            raise OverflowError("timestamp too large to convert to C _PyTime_t")
    else:
        raise TypeError("timeout must be an integer or None")
    ms = -(-ns // 1_000_000)
    if not -_INT_MAX - 1 <= ms <= _INT_MAX:
        raise OverflowError("timeout is too large")
    return ms


class _EpollBase:
    """The select.epoll-shaped API both implementations provide."""

    def __enter__(self) -> Self:
        if self.closed:
            raise ValueError("I/O operation on closed epoll object")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        """Close the epoll fd (idempotent)."""
        raise NotImplementedError


class NativeEpoll(_EpollBase):
    """epoll via kata_shim._native (native_epoll_*), behaving like select.epoll."""

    def __init__(self) -> None:
        self._fd = native_epoll_create(True)  # -1 once closed

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        return self._open_fd()

    def register(self, fd: int | _HasFileno, eventmask: int = _DEFAULT_MASK) -> None:
        self._ctl(EPOLL_CTL_ADD, fd, eventmask)

    def modify(self, fd: int | _HasFileno, eventmask: int) -> None:
        self._ctl(EPOLL_CTL_MOD, fd, eventmask)

    def unregister(self, fd: int | _HasFileno) -> None:
        self._ctl(EPOLL_CTL_DEL, fd, 0)

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        """Ready (fd, events) pairs; timeout in seconds, None or negative = forever."""
        maxevents = _c_int(maxevents)  # select's order: argument types, closed, timeout, values
        epfd = self._open_fd()
        timeout_ms = _poll_timeout_ms(timeout)
        if maxevents == -1:
            maxevents = _DEFAULT_MAXEVENTS
        return native_epoll_wait(epfd, maxevents, timeout_ms)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _open_fd(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed epoll object")
        return self._fd

    def _ctl(self, op: int, fd: int | _HasFileno, eventmask: int) -> None:
        target, mask = _as_fd(fd), operator.index(eventmask) & 0xFFFFFFFF
        native_epoll_ctl(self._open_fd(), op, target, mask)


class PyEpoll(_EpollBase):
    """The same API over select.epoll."""

    def __init__(self) -> None:
        self._ep = select.epoll()

    @property
    def closed(self) -> bool:
        return self._ep.closed

    def fileno(self) -> int:
        return self._ep.fileno()

    def register(self, fd: int | _HasFileno, eventmask: int = _DEFAULT_MASK) -> None:
        self._ep.register(fd, eventmask)

    def modify(self, fd: int | _HasFileno, eventmask: int) -> None:
        self._ep.modify(fd, eventmask)

    def unregister(self, fd: int | _HasFileno) -> None:
        self._ep.unregister(fd)

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        """Ready (fd, events) pairs; timeout in seconds, None or negative = forever."""
        return self._ep.poll(timeout, maxevents)

    def close(self) -> None:
        self._ep.close()


Epoll: type[NativeEpoll] | type[PyEpoll] = PyEpoll
epoll_create, epoll_ctl, epoll_wait = py_epoll_create, py_epoll_ctl, py_epoll_wait
IMPLEMENTATION = "python"
if _lib is not None:
    Epoll = NativeEpoll
    epoll_create, epoll_ctl, epoll_wait = native_epoll_create, native_epoll_ctl, native_epoll_wait
    IMPLEMENTATION = "cffi"
