"""Fuzz the server side of ttrpc with random and mutated byte streams.

Part 1 feeds ≥ 10,000 streams (valid frames with corrupted payloads, truncated
frames, oversize and reserved lengths, random bytes) to ServerConnection: the
only exception allowed is the documented ProtocolError, and every stream is
processed in bounded time. Part 2 sends garbage over real connections to a
live server, which must then still answer a valid request on a new connection.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kata_shim.proto import ttrpc_pb2
from kata_shim.ttrpc import wire
from kata_shim.ttrpc.connection import ProtocolError, RequestReceived, ServerConnection, StreamError
from tests.fakes.echo import connected, echo, echo_server, run_on

COUNTER = {"streams": 0}


def valid_request(rng: random.Random) -> bytes:
    request = ttrpc_pb2.Request(
        service=rng.choice(["containerd.task.v2.Task", "test.Echo", ""]),
        method=rng.choice(["Create", "Echo", "x" * rng.randrange(50)]),
        payload=rng.randbytes(rng.randrange(64)),
        timeout_nano=rng.randrange(-5, 10**10),
    )
    return request.SerializeToString()


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if not buf:
            break
        op = rng.randrange(4)
        pos = rng.randrange(len(buf))
        if op == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            del buf[pos : pos + rng.randrange(1, 8)]
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 8))
        else:
            buf[pos] = rng.choice([0, 0xFF, 0x7F, 0x80])
    return bytes(buf)


def make_stream(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    frames = []
    for _ in range(rng.randrange(1, 5)):
        payload = valid_request(rng)
        if kind in (1, 2):
            payload = mutate(rng, payload)
        frames.append(wire.encode_frame(rng.randrange(1 << 32), rng.randrange(1, 4), payload))
    data = b"".join(frames)
    if kind == 2:
        data = mutate(rng, data)  # corrupt headers too
    elif kind == 3:
        data = data[: rng.randrange(len(data) + 1)]  # truncated
    elif kind == 4:
        length = rng.choice([wire.MAX_PAYLOAD + 1, 1 << 24, 0xFFFFFFFF, 50_000_000])
        data = wire.HEADER.pack(length, rng.randrange(1 << 32), 1, 0) + rng.randbytes(100) + data
    elif kind == 5:
        data = rng.randbytes(rng.randrange(1, 300))
    return data


def feed_stream(data: bytes, chunk_seed: int) -> list[RequestReceived | StreamError]:
    conn = ServerConnection()
    rng = random.Random(chunk_seed)
    events: list[RequestReceived | StreamError] = []
    pos = 0
    while pos < len(data):
        step = rng.randrange(1, 512)
        events += conn.receive_data(data[pos : pos + step])
        pos += step
    return events


@settings(
    max_examples=10_500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(seed=st.integers(0, 2**63))
def test_server_connection_survives_fuzzed_streams(seed: int) -> None:
    COUNTER["streams"] += 1
    rng = random.Random(seed)
    data = make_stream(rng)
    started = time.monotonic()
    try:
        events = feed_stream(data, seed)
    except ProtocolError:
        return
    assert time.monotonic() - started < 1.0
    for event in events:
        assert isinstance(event, RequestReceived | StreamError)
        assert event.stream_id % 2 == 1 or isinstance(event, StreamError)


def test_fuzz_count_reached() -> None:
    """Runs after the fuzz test in file order: proves ≥ 10,000 streams were fed."""
    print(f"fuzz: fed {COUNTER['streams']} random/mutated streams to ServerConnection")
    assert COUNTER["streams"] >= 10_000


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_live_server_survives_garbage_connections(loop: str) -> None:
    rng = random.Random(20261123)

    async def garbage(path: str) -> None:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(make_stream(rng))
        try:
            await writer.drain()
            await asyncio.wait_for(reader.read(65536), 0.05)
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    async def main() -> str:
        async with echo_server() as (_server, _, path):
            for _batch in range(30):
                await asyncio.gather(*(garbage(path) for _ in range(10)))
            async with connected(path) as client:
                return await echo(client, "Echo", "alive")

    assert run_on(loop, main()) == "ALIVE"
