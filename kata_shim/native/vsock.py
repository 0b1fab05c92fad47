"""AF_VSOCK connect/listen/accept with timeouts: cffi-backed, socket-module fallback.

Both implementations validate arguments identically (before any syscall) and
return socket.socket objects. Used by the agent (listen on port 1024) and by
the shim on hosts with vhost-vsock. Never exercised on the development
machines' host, whose AF_VSOCK is their own link to their hypervisor: the
comparison runs inside a guest VM (kata_shim.native.selftest).
"""

from __future__ import annotations

import os
import select
import socket

__all__ = [
    "IMPLEMENTATION",
    "VMADDR_CID_ANY",
    "VMADDR_CID_HOST",
    "VMADDR_CID_LOCAL",
    "NativeVsock",
    "PyVsock",
    "accept",
    "connect",
    "listen",
    "validate_address",
]

try:
    from kata_shim._native import ffi as _ffi
    from kata_shim._native import lib as _lib
except ImportError:  # pragma: no cover - only without the built extension
    _ffi = _lib = None

VMADDR_CID_ANY = 0xFFFFFFFF
VMADDR_CID_LOCAL = 1
VMADDR_CID_HOST = 2
_U32 = 0xFFFFFFFF


def validate_address(cid: int, port: int) -> None:
    """Raise ValueError unless cid and port are valid 32-bit vsock values."""
    for name, value in (("cid", cid), ("port", port)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"vsock {name} must be an int, got {type(value).__name__}")
        if not 0 <= value <= _U32:
            raise ValueError(f"vsock {name} {value} out of range 0..{_U32}")


def _validate_timeout(timeout: float | None) -> int:
    """Seconds (None = forever) → milliseconds for poll (-1 = forever)."""
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
    return int(timeout * 1000)


def _check(rc: int) -> int:
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc))
    return rc


class NativeVsock:
    """vsock through kata_shim._native."""

    @staticmethod
    def connect(cid: int, port: int, timeout: float | None) -> socket.socket:
        validate_address(cid, port)
        timeout_ms = _validate_timeout(timeout)
        return socket.socket(fileno=_check(_lib.ks_vsock_connect(cid, port, timeout_ms)))

    @staticmethod
    def listen(cid: int, port: int, backlog: int = 128) -> socket.socket:
        validate_address(cid, port)
        return socket.socket(fileno=_check(_lib.ks_vsock_listen(cid, port, backlog)))

    @staticmethod
    def accept(sock: socket.socket, timeout: float | None) -> tuple[socket.socket, tuple[int, int]]:
        timeout_ms = _validate_timeout(timeout)
        cid = _ffi.new("uint32_t *")
        port = _ffi.new("uint32_t *")
        fd = _check(_lib.ks_vsock_accept(sock.fileno(), timeout_ms, cid, port))
        return socket.socket(fileno=fd), (int(cid[0]), int(port[0]))


class PyVsock:
    """The same API over the socket module."""

    @staticmethod
    def connect(cid: int, port: int, timeout: float | None) -> socket.socket:
        validate_address(cid, port)
        _validate_timeout(timeout)
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((cid, port))
        except TimeoutError as exc:
            sock.close()
            raise TimeoutError(110, os.strerror(110)) from exc
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        return sock

    @staticmethod
    def listen(cid: int, port: int, backlog: int = 128) -> socket.socket:
        validate_address(cid, port)
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.bind((cid, port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock

    @staticmethod
    def accept(sock: socket.socket, timeout: float | None) -> tuple[socket.socket, tuple[int, int]]:
        timeout_ms = _validate_timeout(timeout)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        if not poller.poll(timeout_ms):
            raise TimeoutError(110, os.strerror(110))
        conn, (cid, port) = sock.accept()
        conn.setblocking(True)
        return conn, (cid, port)


_IMPL = NativeVsock if _lib is not None else PyVsock
IMPLEMENTATION = "cffi" if _lib is not None else "python"
connect = _IMPL.connect
listen = _IMPL.listen
accept = _IMPL.accept
