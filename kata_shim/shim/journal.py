"""A logging handler that writes to journald over its native protocol.

Each record is one datagram of `KEY=value` fields (values containing a
newline use the binary form: `KEY\\n<le64 length><bytes>\\n`) sent to the
journal socket; a record too large for one datagram goes through a sealed
memfd passed with SCM_RIGHTS, as journald expects. Protocol:
https://systemd.io/JOURNAL_NATIVE_PROTOCOL/ (a stable, documented interface).

Why not libsystemd (systemd-python / cysystemd): `sd_journal_send` always
talks to /run/systemd/journal/socket, so it cannot reach a journald running
in a journal namespace (`/run/systemd/journal.<ns>/socket`, what a service
with `LogNamespace=` uses and what the tests start), and it would add a C
extension to build and ship for roughly forty lines of socket code.

The socket is non-blocking: a record journald cannot take at once is dropped
and counted (`dropped`); logging must never stall the shim's event loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Mapping

__all__ = [
    "DEFAULT_SOCKET",
    "IDENTIFIER",
    "SOCKET_ENV",
    "JournalHandler",
    "encode_fields",
    "journal_socket",
    "syslog_priority",
]

DEFAULT_SOCKET = "/run/systemd/journal/socket"
SOCKET_ENV = "KATA_SHIM_JOURNAL_SOCKET"  # another journal socket (journal namespaces, tests)
IDENTIFIER = "kata"  # `journalctl -t kata`, as the Go runtime and runtime-rs log

_SEAL_ALL = 0x0001 | 0x0002 | 0x0004 | 0x0008  # F_SEAL_SEAL | SHRINK | GROW | WRITE
_F_ADD_SEALS = 1033


def journal_socket(env: Mapping[str, str] | None = None) -> str | None:
    """The journal socket to use when it exists (and is a socket), else None."""
    path = (os.environ if env is None else env).get(SOCKET_ENV) or DEFAULT_SOCKET
    try:
        return path if stat.S_ISSOCK(os.stat(path).st_mode) else None
    except OSError:
        return None


def syslog_priority(levelno: int) -> int:
    """Python level → syslog priority (3 err, 4 warning, 6 info, 7 debug)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def encode_fields(fields: dict[str, str]) -> bytes:
    """The native-protocol payload for `fields` (names: A-Z, 0-9, _)."""
    out = bytearray()
    for name, value in fields.items():
        data = value.encode(errors="replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends records to journald with SYSLOG_IDENTIFIER=kata and the shim's ids as fields."""

    def __init__(self, path: str, extra: dict[str, str] | None = None) -> None:
        super().__init__()
        self.path = path
        self.extra = dict(extra or {})  # e.g. KATA_NAMESPACE, KATA_ID
        self.dropped = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        fields = {
            "MESSAGE": self.format(record),
            "PRIORITY": str(syslog_priority(record.levelno)),
            "SYSLOG_IDENTIFIER": IDENTIFIER,
            "SYSLOG_PID": str(record.process or os.getpid()),
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName or "",
            "TID": str(threading.get_native_id()),  # the kernel thread id, as journald means it
        }
        fields.update(self.extra)
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = encode_fields(self.fields(record))
        except Exception:
            self.handleError(record)
            return
        try:
            self._send(payload)
        except OSError:
            self.dropped += 1

    def _send(self, payload: bytes) -> None:
        try:
            self.sock.sendto(payload, self.path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(payload)

    def _send_memfd(self, payload: bytes) -> None:
        import fcntl

        fd = os.memfd_create("kata-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            fcntl.fcntl(fd, _F_ADD_SEALS, _SEAL_ALL)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self.sock.sendmsg([], rights, 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        super().close()
