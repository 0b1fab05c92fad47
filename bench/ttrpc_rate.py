"""Unary ttrpc round trips per second over one unix connection (our client → our server).

Prints JSON: sequential and 16-concurrent-caller rates on uvloop, plus a
micro-benchmark of the frame decoder (Cython vs pure Python). Run:
`.venv/bin/python bench/ttrpc_rate.py [--seconds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from typing import Any

import uvloop
from google.protobuf import wrappers_pb2

from kata_shim.ttrpc import wire
from kata_shim.ttrpc._framing import FrameDecoder as CFrameDecoder
from kata_shim.ttrpc.client import Client
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher, MethodDesc, ServiceDesc

S = wrappers_pb2.StringValue
DESC = ServiceDesc("bench.Echo", {"Echo": MethodDesc("Echo", S, S)})


class Echo:
    async def Echo(self, ctx: object, request: S) -> S:
        return request


async def _rate(client: Client, seconds: float, callers: int) -> float:
    request = S(value="ping")
    count = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await client.call("bench.Echo", "Echo", request, S)
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return count / (time.perf_counter() - started)


async def rpc_rates(seconds: float) -> dict[str, float]:
    dispatcher = Dispatcher()
    dispatcher.register(DESC, Echo())
    server = Server(dispatcher)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.sock")
        await server.serve_unix(path)
        client = await Client.connect_unix(path)
        await _rate(client, 0.3, 1)  # warm up
        sequential = await _rate(client, seconds, 1)
        concurrent = await _rate(client, seconds, 16)
        client.close()
        server.close()
        await server.wait_closed()
    return {"sequential_rps": round(sequential), "concurrent16_rps": round(concurrent)}


def uvloop_run(coro: Any) -> Any:
    """uvloop.run() exists from uvloop 0.18 only; Debian 12 has 0.17."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def decoder_rate(cls: type, frames: int = 200_000) -> float:
    """Frames per second decoded from 4 KiB chunks of small request frames."""
    data = b"".join(wire.encode_frame(2 * i + 1, 1, b"x" * 60) for i in range(frames))
    decoder = cls()
    started = time.perf_counter()
    for pos in range(0, len(data), 4096):
        decoder.feed(data[pos : pos + 4096])
        while decoder.next_frame() is not wire.NEED_DATA:
            pass
    return frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    result: dict[str, object] = {"loop": "uvloop", **uvloop_run(rpc_rates(args.seconds))}
    cython_fps, python_fps = decoder_rate(CFrameDecoder), decoder_rate(wire.PyFrameDecoder)
    result["framing"] = {
        "cython_frames_per_s": round(cython_fps),
        "python_frames_per_s": round(python_fps),
        "speedup": round(cython_fps / python_fps, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
