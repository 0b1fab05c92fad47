"""Where the agent listens: a unix socket, a virtio-serial port, or AF_VSOCK.

Specs: `unix:/path` (local sandbox), `vport:<name>` (virtio-serial port found
by name under /sys/class/virtio-ports, kept open for the agent's lifetime; one
byte stream = one ttrpc connection, served again whenever the host side
reconnects), `vsock:<port>` (listen on any CID; real hosts with vhost-vsock).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from kata_shim.errors import InvalidArgument
from kata_shim.ttrpc.server import Server

__all__ = ["find_virtio_port", "parse_listen", "serve_channel"]

log = logging.getLogger(__name__)
VIRTIO_PORTS = Path("/sys/class/virtio-ports")


def parse_listen(spec: str) -> tuple[str, str]:
    kind, _, where = spec.partition(":")
    if kind not in ("unix", "vport", "vsock") or not where:
        raise InvalidArgument(f"bad listen spec {spec!r} (unix:PATH, vport:NAME or vsock:PORT)")
    if kind == "vsock" and not where.isdigit():
        raise InvalidArgument(f"bad vsock port in {spec!r}")
    return kind, where


def find_virtio_port(name: str, root: Path = VIRTIO_PORTS, timeout: float = 10.0) -> Path:
    """/dev/<vportNpM> whose sysfs name is `name` (waiting for the driver to appear)."""
    import time

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


async def _serve_port(server: Server, device: Path) -> None:
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)  # held for the agent's lifetime
    log.info("serving ttrpc on virtio-serial port %s", device)
    try:
        while True:
            closed = await server.serve_device(fd)
            await closed
            log.info("host side of %s disconnected; serving it again", device)
            await asyncio.sleep(0.1)
    finally:
        os.close(fd)


async def serve_channel(server: Server, spec: str) -> asyncio.Task[None] | None:
    """Start listening; returns the task serving a virtio-serial port, if any."""
    kind, where = parse_listen(spec)
    if kind == "unix":
        await server.serve_unix(where, mode=0o600)
        log.info("serving ttrpc on unix:%s", where)
        return None
    if kind == "vport":
        device = await asyncio.get_running_loop().run_in_executor(None, find_virtio_port, where)
        return asyncio.ensure_future(_serve_port(server, device))
    from kata_shim.native import vsock

    sock = vsock.listen(vsock.VMADDR_CID_ANY, int(where))
    await server.serve_socket(sock)
    log.info("serving ttrpc on vsock port %s", where)
    return None
