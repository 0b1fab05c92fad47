"""Where the agent listens: a unix socket, a virtio-serial port, or AF_VSOCK.

Listen specs: `unix:/path` (local sandbox), `vport:<name>` (the virtio-serial
port whose /sys/class/virtio-ports/*/name is <name>, or `vport:/dev/vportNpM`;
opened O_RDWR once and kept open for the agent's lifetime; the port is one
byte stream = one ttrpc connection, served again whenever the host side goes
away and comes back), `vsock:<port>` (any CID; real hosts with vhost-vsock;
never exercised on development machines). Kata's `vsock://-1:1024` and
`unix:///path` forms are accepted too. A unix path longer than a sun_path is
bound through a short /proc/self/fd alias (kata_shim/unixpath.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from kata_shim.errors import InvalidArgument
from kata_shim.native import vsock
from kata_shim.ttrpc.server import Server
from kata_shim.unixpath import short_address

__all__ = ["find_virtio_port", "parse_listen", "serve_channel", "serve_port"]

log = logging.getLogger(__name__)
VIRTIO_PORTS = Path("/sys/class/virtio-ports")
RESERVE_DELAY = 0.1  # between two connections on a virtio-serial port


def parse_listen(spec: str) -> tuple[str, str]:
    """`kind:where` → (kind, where) with kind in unix / vport / vsock."""
    kind, _, where = spec.partition(":")
    if kind == "vsock" and where.startswith("//"):
        where = where[2:].rpartition(":")[2]  # vsock://<cid>:<port>
    elif kind == "unix" and where.startswith("//"):
        where = where[2:]
    if kind not in ("unix", "vport", "vsock") or not where:
        raise InvalidArgument(f"bad listen spec {spec!r} (unix:PATH, vport:NAME or vsock:PORT)")
    if kind == "vsock" and not where.isdigit():
        raise InvalidArgument(f"bad vsock port in {spec!r}")
    return kind, where


def find_virtio_port(name: str, root: Path = VIRTIO_PORTS, timeout: float = 10.0) -> Path:
    """/dev/<vportNpM> whose sysfs name is `name` (waiting for the driver to appear)."""
    if name.startswith("/"):
        return Path(name)
    deadline = time.monotonic() + timeout
    while True:
        for port in sorted(root.glob("*")):
            try:
                if (port / "name").read_text().strip() == name:
                    return Path("/dev") / port.name
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"no virtio-serial port named {name} under {root}")
        time.sleep(0.05)


async def serve_port(server: Server, fd: int) -> None:
    """Serve ttrpc on an open duplex character device until cancelled.

    One connection at a time; when it ends (the host side closed: EOF/EIO),
    serve the same fd again. `fd` stays owned by the caller.
    """
    while True:
        closed = await server.serve_device(fd)
        await closed
        log.info("virtio-serial peer went away; serving the port again")
        await asyncio.sleep(RESERVE_DELAY)


async def _serve_device_path(server: Server, device: Path) -> None:
    fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)  # held for our lifetime
    log.info("serving ttrpc on virtio-serial port %s", device)
    try:
        await serve_port(server, fd)
    finally:
        os.close(fd)


async def serve_channel(server: Server, spec: str) -> asyncio.Task[None] | None:
    """Start listening; returns the task serving a virtio-serial port, if any."""
    kind, where = parse_listen(spec)
    if kind == "unix":
        with short_address(Path(where)) as address:  # a long state root (kata_shim/unixpath.py)
            await server.serve_unix(address, mode=0o600)
        log.info("serving ttrpc on unix:%s", where)
        return None
    if kind == "vport":
        loop = asyncio.get_running_loop()
        device = await loop.run_in_executor(None, find_virtio_port, where)
        return asyncio.ensure_future(_serve_device_path(server, device))
    sock = vsock.listen(vsock.VMADDR_CID_ANY, int(where), 128)
    await server.serve_socket(sock)
    log.info("serving ttrpc on vsock port %s", where)
    return None
