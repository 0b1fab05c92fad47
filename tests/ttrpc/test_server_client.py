"""The asyncio server and client together, on the stock loop and on uvloop."""

from __future__ import annotations

import asyncio
import os
import pty
import socket
import struct
import tty

import pytest
from google.protobuf import wrappers_pb2

from kata_shim import errors
from kata_shim.ttrpc import wire
from kata_shim.ttrpc.client import Client
from tests.fakes.echo import ERRORS, ZERO_COPY_VALUE, S, connected, echo, echo_server, run_on

pytestmark = [pytest.mark.timeout(30), pytest.mark.parametrize("loop", ["asyncio", "uvloop"])]


def test_echo_round_trip(loop: str) -> None:
    async def main() -> str:
        async with echo_server() as (_, _, path), connected(path) as client:
            return await echo(client, "Echo", "hi")

    assert run_on(loop, main()) == "HI"


def test_unknown_service_and_method_are_unimplemented(loop: str) -> None:
    async def main() -> list[str]:
        async with echo_server() as (_, _, path), connected(path) as client:
            messages = []
            for service, method in (("no.Such", "Echo"), ("test.Echo", "Nope")):
                with pytest.raises(errors.Unimplemented) as info:
                    await client.call(
                        service, method, wrappers_pb2.StringValue(), wrappers_pb2.StringValue
                    )
                messages.append(info.value.message)
            return messages

    assert run_on(loop, main()) == ["service no.Such", "method Nope"]


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_each_error_class_round_trips(loop: str, name: str) -> None:
    async def main() -> None:
        async with echo_server() as (_, _, path), connected(path) as client:
            with pytest.raises(ERRORS[name]) as info:
                await echo(client, "Fail", name)
            assert info.value.message == f"failed with {name}"

    run_on(loop, main())


def test_oserror_maps_through_errno_and_bugs_are_unknown(loop: str) -> None:
    async def main() -> None:
        async with echo_server() as (_, _, path), connected(path) as client:
            with pytest.raises(errors.NotFound):
                await echo(client, "Fail", "oserror")
            with pytest.raises(errors.ShimError) as info:
                await echo(client, "Fail", "bug")
            assert info.value.code == errors.Code.UNKNOWN
            assert await echo(client, "Echo", "still up") == "STILL UP"

    run_on(loop, main())


def test_blocked_handler_does_not_block_other_calls(loop: str) -> None:
    async def main() -> None:
        async with echo_server() as (_, service, path), connected(path) as client:
            blocked = asyncio.ensure_future(echo(client, "Block", ""))
            await service.blocked.wait()
            assert await echo(client, "Echo", "meanwhile") == "MEANWHILE"
            service.release.set()
            assert await blocked == "released"

    run_on(loop, main())


def test_many_concurrent_calls_on_one_connection(loop: str) -> None:
    async def main() -> list[str]:
        async with echo_server() as (_, _, path), connected(path) as client:
            return await asyncio.gather(*(echo(client, "Echo", f"c{i}") for i in range(200)))

    assert run_on(loop, main()) == [f"C{i}" for i in range(200)]


def test_inline_handler_is_answered_without_a_task(loop: str) -> None:
    async def main() -> None:
        async with echo_server() as (_, service, path), connected(path) as client:
            assert await echo(client, "Inline", "now") == "NOW"
            assert await echo(client, "Inline", "with a deadline", timeout=5) == "WITH A DEADLINE"
            with pytest.raises(errors.NotFound) as info:
                await echo(client, "Inline", "NotFound")
            assert info.value.message == "failed with NotFound"
            assert service.in_task == [False, False, False]
            service.in_task.clear()
            assert await echo(client, "Echo", "tasked") == "TASKED"
            assert service.in_task == []  # Echo is not inline: not recorded

    run_on(loop, main())


def test_inline_handler_that_waits_after_all_finishes_in_a_task(loop: str) -> None:
    async def main() -> None:
        async with echo_server() as (_, service, path), connected(path) as client:
            waiting = asyncio.ensure_future(echo(client, "Inline", "wait"))
            await service.blocked.wait()
            assert await echo(client, "Echo", "meanwhile") == "MEANWHILE"
            service.release.set()
            assert await waiting == "released"
            assert service.in_task == [False, True]  # began inline, resumed in a task

    run_on(loop, main())


def test_inline_handler_that_waits_is_cancelled_with_its_connection(loop: str) -> None:
    async def main() -> int:
        async with echo_server() as (_, service, path):
            client = await Client.connect_unix(path, timeout=5)
            waiting = asyncio.ensure_future(echo(client, "Inline", "wait"))
            await service.blocked.wait()
            client.close()
            await client.wait_closed()
            with pytest.raises(errors.ShimError):
                await waiting
            for _ in range(100):
                if service.cancelled:
                    break
                await asyncio.sleep(0.01)
            return service.cancelled

    assert run_on(loop, main()) == 1


def test_timeout_nano_is_enforced_by_the_server(loop: str) -> None:
    async def main() -> None:
        async with echo_server() as (_, _, path):
            # raw request with timeout_nano = 50 ms but no local client timeout
            client = await Client.connect_unix(path)
            stream_id, frame = client._conn.start_request(
                "test.Echo",
                "Sleep",
                wrappers_pb2.StringValue(value="5").SerializeToString(),
                50_000_000,
            )
            future = asyncio.get_running_loop().create_future()
            client._pending[stream_id] = future
            client._transport.write(frame)
            response = await asyncio.wait_for(future, 5)
            assert response.code == errors.Code.DEADLINE_EXCEEDED
            client.close()
            await client.wait_closed()

    run_on(loop, main())


def test_client_timeout_raises_deadline_exceeded_and_connection_survives(loop: str) -> None:
    async def main() -> None:
        async with echo_server() as (_, _, path), connected(path) as client:
            with pytest.raises(errors.DeadlineExceeded):
                await echo(client, "Sleep", "5", timeout=0.1)
            assert await echo(client, "Echo", "ok") == "OK"

    run_on(loop, main())


def test_metadata_and_peer_reach_the_handler(loop: str) -> None:
    async def main() -> None:
        async with echo_server() as (_, service, path), connected(path) as client:
            await echo(client, "Context", "", metadata={"Containerd-Namespace-TTRPC": "k8s.io"})
            ctx = service.last_ctx
            assert ctx is not None
            assert ctx.metadata == {"containerd-namespace-ttrpc": ("k8s.io",)}
            assert ctx.peer is not None and ctx.peer.uid == os.getuid()
            assert ctx.peer.pid == os.getpid()

    run_on(loop, main())


def test_server_close_fails_in_flight_calls_promptly(loop: str) -> None:
    async def main() -> None:
        async with echo_server() as (server, service, path), connected(path) as client:
            pending = asyncio.ensure_future(echo(client, "Block", ""))
            await service.blocked.wait()
            server.close()
            with pytest.raises(errors.Unavailable, match="ttrpc: closed"):
                await asyncio.wait_for(pending, 2)
            with pytest.raises(errors.Unavailable):
                await echo(client, "Echo", "after close")
            await asyncio.sleep(0)
            assert service.cancelled == 1

    run_on(loop, main())


def test_oversize_request_answered_and_connection_kept(loop: str) -> None:
    async def main() -> None:
        async with echo_server(max_payload=1024) as (_, _, path):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(wire.encode_frame(1, 1, b"\0" * 5000))
            writer.write(wire.encode_frame(2, 1, b""))  # even id
            await writer.drain()
            statuses = []
            for _ in range(2):
                header = await reader.readexactly(wire.HEADER_SIZE)
                length, sid, _, _ = wire.HEADER.unpack(header)
                body = await reader.readexactly(length)
                from kata_shim.proto import ttrpc_pb2

                statuses.append((sid, ttrpc_pb2.Response.FromString(body).status.code))
            writer.close()
            assert statuses == [
                (1, errors.Code.RESOURCE_EXHAUSTED),
                (2, errors.Code.INVALID_ARGUMENT),
            ]

    run_on(loop, main())


def test_oversize_response_becomes_resource_exhausted(loop: str) -> None:
    async def main() -> None:
        async with echo_server(max_payload=4096) as (_, _, path), connected(path) as client:
            with pytest.raises(errors.ShimError) as info:
                await echo(client, "Big", "10000")
            assert info.value.code == errors.Code.RESOURCE_EXHAUSTED
            assert await echo(client, "Big", "10") == "x" * 10

    run_on(loop, main())


@pytest.mark.parametrize("send_buffer", [0, 4 << 20])
def test_zero_copy_replies_equal_generic_ones_and_never_interleave(
    loop: str, send_buffer: int
) -> None:
    """Zero-copy replies (header, then the handler's buffer) decode like the generic ones,
    also when many large ones are written at once (partial writes); call_zero_copy returns
    the field as a view."""

    async def main() -> None:
        async with echo_server(send_buffer=send_buffer) as (_, _, path), connected(path) as c:
            sizes = [0, 1, 127, 128, 300_000, 1 << 20, *range(1000, 200_000, 9973)]
            replies = await asyncio.gather(*(echo(c, "BigZeroCopy", str(n)) for n in sizes))
            assert [len(r) for r in replies] == sizes and all(set(r) <= {"x"} for r in replies)
            raw = await c.call_encoded("test.Echo", "BigZeroCopy", S(value="70000"))
            generic = await c.call_encoded("test.Echo", "Big", S(value="70000"))
            assert isinstance(raw, memoryview) and bytes(raw) == bytes(generic)
            views = await asyncio.gather(
                *(
                    c.call_zero_copy("test.Echo", "BigZeroCopy", S(value=str(n)), ZERO_COPY_VALUE)
                    for n in sizes
                )
            )
            assert all(isinstance(v, memoryview) for v in views)
            assert [bytes(v) for v in views] == [b"x" * n for n in sizes]
            # a generic reply decodes through the zero-copy field too (same wire shape)
            big = await c.call_zero_copy("test.Echo", "Big", S(value="5"), ZERO_COPY_VALUE)
            assert bytes(big) == b"xxxxx"

    run_on(loop, main())


def test_oversize_zero_copy_reply_becomes_resource_exhausted(loop: str) -> None:
    async def main() -> None:
        async with echo_server(max_payload=4096) as (_, _, path), connected(path) as client:
            with pytest.raises(errors.ShimError) as info:
                await echo(client, "BigZeroCopy", "5000")
            assert info.value.code == errors.Code.RESOURCE_EXHAUSTED
            assert await echo(client, "BigZeroCopy", "4000") == "x" * 4000

    run_on(loop, main())


def test_peer_with_other_uid_is_rejected(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)

    async def main() -> None:
        async with echo_server(require_same_uid=True) as (server, _, path), connected(path) as c:
            with pytest.raises(errors.Unavailable):
                await echo(c, "Echo", "x", timeout=2)
            assert server.connection_count == 0

    run_on(loop, main())


def test_whole_frames_are_written_once_each(loop: str) -> None:
    """Concurrent handlers finishing together must never interleave frame bytes."""

    async def main() -> None:
        async with echo_server() as (_, _, path):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            client = await Client.from_socket(sock)
            values = [str(i) * (1000 + i) for i in range(100)]
            replies = await asyncio.gather(*(echo(client, "Echo", v) for v in values))
            assert replies == [v.upper() for v in values]
            client.close()
            await client.wait_closed()

    run_on(loop, main())


def test_serve_device_over_a_raw_pty(loop: str) -> None:
    """A virtio-serial port is a character device carrying one connection: a pty stands in."""

    async def main() -> None:
        from kata_shim.ttrpc.server import Server
        from kata_shim.ttrpc.service import Dispatcher
        from tests.fakes.echo import ECHO_DESC, EchoService

        master, slave = pty.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        dispatcher = Dispatcher()
        dispatcher.register(ECHO_DESC, EchoService())
        server = Server(dispatcher)
        done = await server.serve_device(slave)
        host_a, host_b = socket.socketpair()
        loop_ = asyncio.get_running_loop()

        async def pump(src: int, dst: int) -> None:
            while True:
                data = await loop_.run_in_executor(None, os.read, src, 65536)
                if not data:
                    return
                os.write(dst, data)

        relay_out = asyncio.ensure_future(pump(master, host_b.fileno()))
        relay_in = asyncio.ensure_future(pump(host_b.fileno(), master))
        client = await Client.from_socket(host_a)
        assert await echo(client, "Echo", "over serial") == "OVER SERIAL"
        client.close()
        server.close()
        await asyncio.wait_for(done, 5)
        host_b.close()
        os.close(slave)
        os.close(master)
        for task in (relay_out, relay_in):
            task.cancel()
        await asyncio.gather(relay_out, relay_in, return_exceptions=True)

    run_on(loop, main())


def test_truncated_frame_then_close_is_harmless(loop: str) -> None:
    async def main() -> None:
        async with echo_server() as (_server, _, path):
            _reader, writer = await asyncio.open_unix_connection(path)
            writer.write(struct.pack(">IIBB", 100, 1, 1, 0) + b"abc")
            await writer.drain()
            writer.close()
            await asyncio.sleep(0.05)
            async with connected(path) as client:
                assert await echo(client, "Echo", "next") == "NEXT"

    run_on(loop, main())
