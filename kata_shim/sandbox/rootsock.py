"""Host-side unix sockets between the shim and the processes it confines (QEMU's jail,
libvirt's emulator wrapper, virtiofsd): a private listening socket and the peer's uid.

Both ends are host processes run as root; the socket lives in the sandbox's
root-only state dir, is made 0600 and each side checks the other is uid 0
(SO_PEERCRED) before trusting what it receives.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from pathlib import Path

__all__ = ["listen_private", "peer_uid"]

_UCRED = struct.Struct("3i")  # pid, uid, gid


def listen_private(path: Path) -> socket.socket:
    """A unix stream socket listening at `path` (replacing a stale one), mode 0600."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of the connected unix socket `conn`."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(creds)[1])
