"""AF_VSOCK connect/listen/accept with timeouts: cffi-backed, socket-module fallback.

Layers: validation (identical for both, before any syscall: cid/port are 0..0xFFFFFFFF,
a connect target cannot be VMADDR_CID_ANY/VMADDR_PORT_ANY, timeouts finite >= 0) →
shared policy in `Vsock` (deadline, EINTR, closing on failure) → primitives: `_NativeOps`
(kata_shim._native) or `_PyOps` (socket module). Fd level: `vsock_connect` returns a
*blocking* CLOEXEC fd (ETIMEDOUT when the deadline passes), `vsock_listen` a listening fd,
`vsock_accept` (fd, peer cid, peer port); `connect/listen/accept` wrap them in
socket.socket objects. NEVER exercised on development hosts (their AF_VSOCK is their own
link to the hypervisor): the real comparison runs in a test guest (selftest.py).
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import time
from typing import Any, Protocol

from kata_shim.native import native_lib

__all__ = [
    "IMPLEMENTATION",
    "NATIVE",
    "PYTHON",
    "VMADDR_CID_ANY",
    "VMADDR_CID_HOST",
    "VMADDR_CID_HYPERVISOR",
    "VMADDR_CID_LOCAL",
    "VMADDR_PORT_ANY",
    "Vsock",
    "accept",
    "connect",
    "listen",
    "validate_address",
    "vsock_accept",
    "vsock_connect",
    "vsock_listen",
]

_ffi, _lib = native_lib()

VMADDR_CID_ANY = 0xFFFFFFFF
VMADDR_PORT_ANY = 0xFFFFFFFF
VMADDR_CID_HYPERVISOR = 0
VMADDR_CID_LOCAL = 1
VMADDR_CID_HOST = 2
_U32_MAX = 0xFFFFFFFF
_INT_MAX = 2**31 - 1


# ---------------------------------------------------------------- validation (shared)
def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"vsock {name} must be an int, got {type(value).__name__}")
    return value


def validate_address(cid: int, port: int, *, connect: bool = False) -> None:
    """ValueError/TypeError unless cid and port are usable 32-bit vsock values."""
    for name, value in (("cid", cid), ("port", port)):
        if not 0 <= _integer(name, value) <= _U32_MAX:
            raise ValueError(f"vsock {name} {value} out of range 0..{_U32_MAX}")
    if connect and cid == VMADDR_CID_ANY:
        raise ValueError("cannot connect to VMADDR_CID_ANY")
    if connect and port == VMADDR_PORT_ANY:
        raise ValueError("cannot connect to VMADDR_PORT_ANY")


def _timeout_ms(timeout_s: float | None, *, allow_none: bool) -> int:
    """Seconds → poll(2) milliseconds (rounded up); None = forever (-1) where allowed."""
    if timeout_s is None and allow_none:
        return -1
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout_s).__name__}")
    if not (math.isfinite(timeout_s) and timeout_s >= 0):
        raise ValueError(f"timeout must be finite and >= 0, got {timeout_s}")
    ms = math.ceil(timeout_s * 1000)
    if ms > _INT_MAX:
        raise ValueError(f"timeout {timeout_s} s is too large")
    return ms


def _check_backlog(backlog: int) -> int:
    if not 0 <= _integer("backlog", backlog) <= _INT_MAX:
        raise ValueError(f"vsock backlog {backlog} out of range 0..{_INT_MAX}")
    return backlog


def _check_fd(fd: int) -> int:
    if not 0 <= _integer("fd", fd) <= _INT_MAX:
        raise ValueError(f"fd {fd} out of range 0..{_INT_MAX}")
    return fd


def _oserror(err: int) -> OSError:
    return OSError(err, os.strerror(err))  # the errno picks the subclass (TimeoutError, ...)


# ---------------------------------------------------------------- primitives
class _Ops(Protocol):
    def connect_start(self, cid: int, port: int) -> int:
        """A non-blocking CLOEXEC socket whose connect is done or in progress."""

    def poll_one(self, fd: int, events: int, timeout_ms: int) -> bool:
        """One poll: True when ready, False on timeout; InterruptedError on EINTR."""

    def connect_finish(self, fd: int) -> None:
        """Raise the connect's error (SO_ERROR), else make fd blocking."""

    def listen(self, cid: int, port: int, backlog: int) -> int:
        """A bound, listening CLOEXEC socket."""

    def accept(self, fd: int) -> tuple[int, int, int]:
        """One accept: (blocking CLOEXEC fd, peer cid, peer port)."""


class _NativeOps:
    """Primitives from kata_shim._native (csrc/native.c)."""

    @staticmethod
    def _lib() -> Any:
        if _lib is None:
            raise ImportError("kata_shim._native is not built")
        return _lib

    @staticmethod
    def _check(rc: int) -> int:
        if rc < 0:
            raise _oserror(-rc)
        return rc

    def connect_start(self, cid: int, port: int) -> int:
        return self._check(self._lib().ks_vsock_connect_start(cid, port))

    def poll_one(self, fd: int, events: int, timeout_ms: int) -> bool:
        rc = self._lib().ks_poll_one(fd, events, timeout_ms)
        return rc != -errno.ETIMEDOUT and self._check(rc) > 0

    def connect_finish(self, fd: int) -> None:
        self._check(self._lib().ks_vsock_connect_finish(fd))

    def listen(self, cid: int, port: int, backlog: int) -> int:
        return self._check(self._lib().ks_vsock_listen(cid, port, backlog))

    def accept(self, fd: int) -> tuple[int, int, int]:
        cid, port = _ffi.new("uint32_t *"), _ffi.new("uint32_t *")
        conn = self._check(self._lib().ks_vsock_accept(fd, cid, port))
        return conn, int(cid[0]), int(port[0])


class _PyOps:
    """The same primitives over the socket module (its sockets are CLOEXEC already)."""

    def connect_start(self, cid: int, port: int) -> int:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            err = sock.connect_ex((cid, port))
            if err not in (0, errno.EINPROGRESS, errno.EINTR):
                raise _oserror(err)
        except BaseException:
            sock.close()
            raise
        return sock.detach()

    def poll_one(self, fd: int, events: int, timeout_ms: int) -> bool:
        poller = select.poll()
        poller.register(fd, events)
        return bool(poller.poll(timeout_ms))

    def connect_finish(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise _oserror(err)
            os.set_blocking(fd, True)
        finally:
            sock.detach()

    def listen(self, cid: int, port: int, backlog: int) -> int:
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as sock:
            sock.bind((cid, port))
            sock.listen(backlog)
            return sock.detach()

    def accept(self, fd: int) -> tuple[int, int, int]:
        listener = socket.socket(fileno=fd)
        try:
            conn, (cid, port) = listener.accept()
        finally:
            listener.detach()
        conn.setblocking(True)
        return conn.detach(), cid, port


# ---------------------------------------------------------------- shared policy
class _Deadline:
    def __init__(self, timeout_ms: int) -> None:
        self._end = None if timeout_ms < 0 else time.monotonic_ns() + timeout_ms * 1_000_000

    def left_ms(self) -> int:
        if self._end is None:
            return -1
        return max(0, -(-(self._end - time.monotonic_ns()) // 1_000_000))


def _wait(ops: _Ops, fd: int, events: int, deadline: _Deadline) -> None:
    """Wait for events on fd until the deadline (ETIMEDOUT); EINTR resumes the wait."""
    while True:
        try:
            if ops.poll_one(fd, events, deadline.left_ms()):
                return
        except InterruptedError:  # Python signal handlers ran; wait for the time left
            continue
        raise _oserror(errno.ETIMEDOUT)


class Vsock:
    """vsock over one set of primitives; NATIVE and PYTHON are the two instances."""

    def __init__(self, ops: _Ops, name: str) -> None:
        self.ops, self.name = ops, name

    def vsock_connect(self, cid: int, port: int, timeout_s: float) -> int:
        """Connected blocking CLOEXEC fd; TimeoutError(ETIMEDOUT) after timeout_s seconds."""
        validate_address(cid, port, connect=True)
        deadline = _Deadline(_timeout_ms(timeout_s, allow_none=False))
        fd = self.ops.connect_start(cid, port)
        try:
            _wait(self.ops, fd, select.POLLOUT, deadline)
            self.ops.connect_finish(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def vsock_listen(self, cid: int, port: int, backlog: int = 128) -> int:
        """Listening CLOEXEC fd bound to (cid, port); cid VMADDR_CID_ANY = every CID."""
        validate_address(cid, port)
        backlog = _check_backlog(backlog)
        return self.ops.listen(cid, port, backlog)

    def vsock_accept(self, fd: int, timeout_s: float | None) -> tuple[int, int, int]:
        """(blocking CLOEXEC fd, peer cid, peer port); None waits forever, else ETIMEDOUT."""
        fd = _check_fd(fd)
        deadline = _Deadline(_timeout_ms(timeout_s, allow_none=True))
        while True:
            _wait(self.ops, fd, select.POLLIN, deadline)
            try:
                return self.ops.accept(fd)
            except (BlockingIOError, InterruptedError):  # lost a race, or a signal: wait again
                continue

    def connect(self, cid: int, port: int, timeout_s: float = 10.0) -> socket.socket:
        return _wrap(self.vsock_connect(cid, port, timeout_s))

    def listen(self, cid: int, port: int, backlog: int = 128) -> socket.socket:
        return _wrap(self.vsock_listen(cid, port, backlog))

    def accept(
        self, sock: socket.socket, timeout_s: float | None = None
    ) -> tuple[socket.socket, tuple[int, int]]:
        fd, cid, port = self.vsock_accept(sock.fileno(), timeout_s)
        return _wrap(fd), (cid, port)


def _wrap(fd: int) -> socket.socket:
    try:
        return socket.socket(fileno=fd)
    except BaseException:
        os.close(fd)
        raise


NATIVE = Vsock(_NativeOps(), "cffi")
PYTHON = Vsock(_PyOps(), "python")
_DEFAULT = NATIVE if _lib is not None else PYTHON
IMPLEMENTATION = _DEFAULT.name
vsock_connect, vsock_listen, vsock_accept = (
    _DEFAULT.vsock_connect,
    _DEFAULT.vsock_listen,
    _DEFAULT.vsock_accept,
)
connect, listen, accept = _DEFAULT.connect, _DEFAULT.listen, _DEFAULT.accept
