"""Agent listeners: spec parsing, virtio-serial discovery, serving ttrpc on a char device.

A raw-mode pty pair stands in for a virtio-serial port: the agent side serves
the pty slave exactly as it serves /dev/vportNpM; the test's client speaks
through the master (bridged to a socketpair, since the ttrpc client wants a
socket). No AF_VSOCK socket is ever created here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tty

import pytest

from kata_shim import errors
from kata_shim.guest.channel import find_virtio_port, parse_listen, serve_port
from kata_shim.guest.main import from_cmdline, listen_from_cmdline, main
from kata_shim.guest.service import HealthService
from kata_shim.proto import agent_pb2, health_pb2
from kata_shim.proto.health_ttrpc import HEALTH_DESC, HealthClient
from kata_shim.ttrpc.client import Client
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher, MethodDesc, ServiceDesc

pytestmark = [pytest.mark.timeout(30)]


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("unix:/run/a.sock", ("unix", "/run/a.sock")),
        ("unix:///run/a.sock", ("unix", "/run/a.sock")),
        ("vport:agent.channel.0", ("vport", "agent.channel.0")),
        ("vport:/dev/vport0p1", ("vport", "/dev/vport0p1")),
        ("vsock:1024", ("vsock", "1024")),
        ("vsock://-1:1024", ("vsock", "1024")),
        ("vsock://4294967295:1024", ("vsock", "1024")),
    ],
)
def test_parse_listen(spec, parsed) -> None:
    assert parse_listen(spec) == parsed


@pytest.mark.parametrize("bad", ["", "unix:", "tcp:1.2.3.4:5", "vsock:abc", "vsock://-1:", "/p"])
def test_parse_listen_rejects(bad) -> None:
    with pytest.raises(errors.InvalidArgument):
        parse_listen(bad)


def test_find_virtio_port_by_name(tmp_path) -> None:
    for port, name in (("vport0p0", "org.qemu.guest_agent"), ("vport0p1", "agent.channel.0")):
        (tmp_path / port).mkdir()
        (tmp_path / port / "name").write_text(name + "\n")
    assert str(find_virtio_port("agent.channel.0", root=tmp_path)) == "/dev/vport0p1"
    assert str(find_virtio_port("/dev/vport9p9", root=tmp_path)) == "/dev/vport9p9"
    with pytest.raises(FileNotFoundError):
        find_virtio_port("missing", root=tmp_path, timeout=0.1)


def test_listen_and_log_level_from_kernel_cmdline() -> None:
    assert listen_from_cmdline("quiet kata_shim.agent=vport:agent.channel.0") == (
        "vport:agent.channel.0"
    )
    assert listen_from_cmdline("kata_shim.channel=vport:x") == "vport:x"
    both = "kata_shim.agent=vport:x agent.server_addr=vsock://-1:1024"
    assert listen_from_cmdline(both) == "vsock://-1:1024"  # Kata's key wins
    assert listen_from_cmdline("console=ttyS0") is None
    assert from_cmdline("a agent.log=debug", ("agent.log=",)) == "debug"


def test_main_refuses_a_bad_listen_spec(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--listen", "tcp:127.0.0.1:1"])
    assert info.value.code == 2 and "bad listen spec" in capsys.readouterr().err


# an echo service: proves arbitrary bytes cross the "port" unchanged, both ways
ECHO = ServiceDesc(
    "test.Echo",
    {"Echo": MethodDesc("Echo", agent_pb2.ReadStreamResponse, agent_pb2.ReadStreamResponse)},
)


class Echo:
    async def Echo(
        self, ctx, request: agent_pb2.ReadStreamResponse
    ) -> agent_pb2.ReadStreamResponse:
        return request


async def bridge(master: int, sock: socket.socket) -> None:
    """Copy bytes between the pty master and a socket until either side ends."""
    loop = asyncio.get_running_loop()
    os.set_blocking(master, False)
    readable = asyncio.Event()
    loop.add_reader(master, readable.set)

    async def to_socket() -> None:
        while True:
            await readable.wait()
            readable.clear()
            with contextlib.suppress(BlockingIOError):
                await loop.sock_sendall(sock, os.read(master, 65536))

    async def to_master() -> None:
        while data := await loop.sock_recv(sock, 65536):
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(master, view) :]
                except BlockingIOError:
                    await asyncio.sleep(0.001)

    try:
        await asyncio.gather(to_socket(), to_master())
    finally:
        loop.remove_reader(master)


def test_ttrpc_over_a_raw_pty_as_a_virtio_serial_port() -> None:
    async def run() -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        dispatcher = Dispatcher()
        dispatcher.register(HEALTH_DESC, HealthService())
        dispatcher.register(ECHO, Echo())
        server = Server(dispatcher)
        serving = asyncio.ensure_future(serve_port(server, slave))
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        pump = asyncio.ensure_future(bridge(master, ours))
        client = await Client.from_socket(theirs)
        try:
            reply = await HealthClient(client).Check(health_pb2.CheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            payload = bytes(range(256)) * 2048 + os.urandom(100_000)  # every byte value, 600 kB
            calls = [
                client.call(
                    "test.Echo",
                    "Echo",
                    agent_pb2.ReadStreamResponse(data=payload[i:]),
                    agent_pb2.ReadStreamResponse,
                    timeout=10,
                )
                for i in range(3)
            ]
            for i, echoed in enumerate(await asyncio.gather(*calls)):
                assert echoed.data == payload[i:]
            version = await HealthClient(client).Version(health_pb2.CheckRequest(), timeout=5)
            assert version.agent_version
        finally:
            client.close()
            await client.wait_closed()
            for task in (pump, serving):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            server.close()
            ours.close()
            os.close(master)
            os.close(slave)

    asyncio.run(run())
