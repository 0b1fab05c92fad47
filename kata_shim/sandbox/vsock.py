"""Host side of vsock agent channels: guest CID allocation and the two dialers.

* vhost-vsock (QEMU): open /dev/vhost-vsock, claim a guest CID with
  VHOST_VSOCK_SET_GUEST_CID (starting at a random CID >= 3 and moving on while
  it is taken, as Kata does), keep the fd and hand it to QEMU as `vhostfd`.
  The agent is then at vsock://<cid>:1024.
* hybrid vsock (Firecracker, Cloud Hypervisor): a host unix socket where the
  client writes "CONNECT <port>\\n" and gets back a line containing "OK".
Only used when the host has /dev/vhost-vsock (or a hybrid socket); the
development machines have neither, and their own /dev/vsock is never opened.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import random
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from kata_shim.errors import DeadlineExceeded, Unavailable

__all__ = ["VHOST_VSOCK", "allocate_guest_cid", "dial_hybrid_vsock", "vhost_vsock_available"]

VHOST_VSOCK = Path("/dev/vhost-vsock")
VHOST_VSOCK_SET_GUEST_CID = 0x4008AF60  # _IOW(0xAF, 0x60, __u64) on x86_64/arm64
FIRST_GUEST_CID = 3
MAX_GUEST_CID = 0xFFFFFFFF - 1
_ATTEMPTS = 64

Ioctl = Callable[[int, int, bytes], object]


def vhost_vsock_available(device: Path = VHOST_VSOCK) -> bool:
    return device.exists() and os.access(device, os.R_OK | os.W_OK)


def allocate_guest_cid(
    device: Path = VHOST_VSOCK, *, ioctl: Ioctl = fcntl.ioctl, start: int | None = None
) -> tuple[int, int]:
    """Claim a free guest CID; return (open vhost fd, cid). The fd must stay open for QEMU."""
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    cid = start if start is not None else random.randint(FIRST_GUEST_CID, 0xFFFFFF)
    try:
        for _ in range(_ATTEMPTS):
            try:
                ioctl(fd, VHOST_VSOCK_SET_GUEST_CID, struct.pack("Q", cid))
                return fd, cid
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
            cid = cid + 1 if cid < MAX_GUEST_CID else FIRST_GUEST_CID
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    raise Unavailable(f"no free vsock guest CID after {_ATTEMPTS} attempts")


async def dial_hybrid_vsock(path: str, port: int, timeout: float = 10.0) -> socket.socket:
    """Connect to a hybrid-vsock unix socket and ask for `port`; return the stream socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, path)
            await loop.sock_sendall(sock, f"CONNECT {port}\n".encode())
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = await loop.sock_recv(sock, 1)  # byte-wise: nothing past the line
                if not chunk:
                    raise Unavailable(f"hybrid vsock {path}: closed during handshake")
                reply += chunk
    except TimeoutError as exc:
        sock.close()
        raise DeadlineExceeded(f"hybrid vsock {path}: no handshake reply in {timeout}s") from exc
    except BaseException:
        sock.close()
        raise
    if b"OK" not in reply:
        sock.close()
        raise Unavailable(f"hybrid vsock {path}: CONNECT {port} refused: {reply.strip()!r}")
    return sock
