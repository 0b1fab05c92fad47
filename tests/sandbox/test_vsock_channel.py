"""Host-side vsock channel pieces: guest CID allocation and the hybrid-vsock dialer.

No AF_VSOCK socket and no /dev/vsock are used: the CID allocator gets a stand-in
device file and an injected ioctl; the hybrid dialer talks to a unix socket.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import tempfile
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.sandbox import vsock
from kata_shim.sandbox.qemu.cmdline import QemuConfig, SandboxPaths, VsockChannel, build_command


def test_cid_allocation_skips_cids_in_use(tmp_path) -> None:
    device = tmp_path / "vhost-vsock"
    device.write_text("")
    tried: list[int] = []

    def fake_ioctl(fd: int, request: int, arg: bytes) -> None:
        assert request == vsock.VHOST_VSOCK_SET_GUEST_CID
        cid = struct.unpack("Q", arg)[0]
        tried.append(cid)
        if cid < 12:
            raise OSError(errno.EADDRINUSE, "in use")

    fd, cid = vsock.allocate_guest_cid(device, ioctl=fake_ioctl, start=10)
    os.close(fd)
    assert (cid, tried) == (12, [10, 11, 12])


def test_cid_allocation_gives_up_and_closes_its_fd(tmp_path) -> None:
    device = tmp_path / "vhost-vsock"
    device.write_text("")
    before = len(os.listdir("/proc/self/fd"))

    def always_busy(fd: int, request: int, arg: bytes) -> None:
        raise OSError(errno.EADDRINUSE, "in use")

    with pytest.raises(errors.Unavailable):
        vsock.allocate_guest_cid(device, ioctl=always_busy, start=3)
    assert len(os.listdir("/proc/self/fd")) == before


def test_vsock_channel_command_line() -> None:
    paths = SandboxPaths(*(Path(tempfile.gettempdir()) / n for n in ("q", "a", "c", "s")))
    argv = build_command(QemuConfig(), paths, "tcg", 1, VsockChannel(vhost_fd=7, cid=42))
    joined = " ".join(argv)
    assert "vhost-vsock-device,guest-cid=42,vhostfd=7" in joined
    assert "virtserialport" not in joined
    assert "kata_shim.agent=vsock:1024" in argv[argv.index("-append") + 1]


class FakeHybridServer:
    """Answers "CONNECT 1024\\n" with `reply` (then "payload" if it is OK); handlers are awaited."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.handlers: list[asyncio.Task[None]] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self, path: str) -> None:
        def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.handlers.append(asyncio.ensure_future(self._handle(reader, writer)))

        self.server = await asyncio.start_unix_server(spawn, path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        if line == b"CONNECT 1024\n":
            writer.write(self.reply + (b"payload" if b"OK" in self.reply else b""))
            await writer.drain()
        await reader.read()  # until the client closes
        writer.close()
        await writer.wait_closed()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        await asyncio.gather(*self.handlers)


def test_hybrid_vsock_handshake_and_refusal(tmp_path) -> None:
    async def main() -> None:
        path = str(tmp_path / "hv.sock")
        server = FakeHybridServer(b"OK 1073741824\n")
        await server.start(path)
        sock = await vsock.dial_hybrid_vsock(path, 1024, timeout=5)
        loop = asyncio.get_running_loop()
        assert await loop.sock_recv(sock, 64) == b"payload"  # nothing consumed past the line
        sock.close()
        await server.stop()
        os.unlink(path)
        refusing = FakeHybridServer(b"ERR no listener\n")
        await refusing.start(path)
        with pytest.raises(errors.Unavailable, match="refused"):
            await vsock.dial_hybrid_vsock(path, 1024, timeout=5)
        await refusing.stop()

    asyncio.run(main())


def test_hybrid_vsock_times_out(tmp_path) -> None:
    async def main() -> None:
        path = str(tmp_path / "silent.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(1)
        try:
            with pytest.raises(errors.DeadlineExceeded):
                await vsock.dial_hybrid_vsock(path, 1024, timeout=0.3)
        finally:
            listener.close()

    asyncio.run(main())


def test_auto_uses_virtio_serial_without_vhost_vsock() -> None:
    assert not vsock.vhost_vsock_available()  # true on the development machines
