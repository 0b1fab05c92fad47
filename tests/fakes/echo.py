"""A tiny ttrpc test service built by hand from well-known protobuf types.

`run_on(loop_kind, coro)` runs a coroutine on the stock asyncio loop or uvloop,
so tests can be parametrized over both event loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import uvloop
from google.protobuf import wrappers_pb2

from kata_shim import errors
from kata_shim.ttrpc.client import Client
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import (
    Dispatcher,
    MethodDesc,
    RequestContext,
    ServiceDesc,
    ZeroCopyField,
    inline,
)

T = TypeVar("T")
S = wrappers_pb2.StringValue
#: StringValue.value (= 1) as a zero-copy field, the way generated code declares one
ZERO_COPY_VALUE = ZeroCopyField(S, 1)

ECHO_DESC = ServiceDesc(
    "test.Echo",
    {
        **{
            name: MethodDesc(name, S, S)
            for name in ("Echo", "Fail", "Block", "Sleep", "Context", "Big", "Inline")
        },
        "BigZeroCopy": MethodDesc("BigZeroCopy", S, S, zero_copy=ZERO_COPY_VALUE),
    },
)

ERRORS: dict[str, type[errors.ShimError]] = {
    cls.__name__: cls
    for cls in (
        errors.NotFound,
        errors.AlreadyExists,
        errors.InvalidArgument,
        errors.FailedPrecondition,
        errors.Unimplemented,
        errors.DeadlineExceeded,
        errors.Unavailable,
    )
}


class EchoService:
    """Echo: upper-cases; Fail: raises the named ShimError; Block: waits for `release`;
    Inline: Echo marked `inline` (or Fail for an error's name; "wait": Block by mistake)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.blocked = asyncio.Event()
        self.cancelled = 0
        self.last_ctx: RequestContext | None = None
        self.in_task: list[bool] = []  # Inline: whether a task ran it, before and after waiting

    async def Echo(self, ctx: RequestContext, req: S) -> S:
        return S(value=req.value.upper())

    async def Fail(self, ctx: RequestContext, req: S) -> S:
        if req.value == "oserror":
            raise FileNotFoundError(2, "no such thing")
        if req.value == "bug":
            raise ZeroDivisionError("handler bug")
        raise ERRORS[req.value](f"failed with {req.value}")

    @inline
    async def Inline(self, ctx: RequestContext, req: S) -> S:
        self.in_task.append(asyncio.current_task() is not None)
        if req.value in ERRORS:
            raise ERRORS[req.value](f"failed with {req.value}")
        if req.value == "wait":
            reply = await self.Block(ctx, req)
            self.in_task.append(asyncio.current_task() is not None)
            return reply
        return S(value=req.value.upper())

    async def Block(self, ctx: RequestContext, req: S) -> S:
        self.blocked.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return S(value="released")

    async def Sleep(self, ctx: RequestContext, req: S) -> S:
        await asyncio.sleep(float(req.value))
        return S(value="slept")

    async def Context(self, ctx: RequestContext, req: S) -> S:
        self.last_ctx = ctx
        return S(value=repr(sorted(ctx.metadata.items())))

    async def Big(self, ctx: RequestContext, req: S) -> S:
        return S(value="x" * int(req.value))

    async def BigZeroCopy(self, ctx: RequestContext, req: S) -> memoryview:
        """Like Big; returns the zero-copy field's bytes (a view: any buffer will do)."""
        return memoryview(b"x" * int(req.value))


def run_on(loop_kind: str, coro: Awaitable[T]) -> T:
    if loop_kind == "uvloop":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # uvloop 0.17: no run()
            return runner.run(coro)  # type: ignore[arg-type]
    return asyncio.run(coro)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def echo_server(**server_kwargs: Any) -> AsyncIterator[tuple[Server, EchoService, str]]:
    service = EchoService()
    dispatcher = Dispatcher()
    dispatcher.register(ECHO_DESC, service)
    server = Server(dispatcher, **server_kwargs)
    with tempfile.TemporaryDirectory(prefix="ks-ttrpc-") as tmp:
        path = os.path.join(tmp, "s.sock")
        await server.serve_unix(path)
        try:
            yield server, service, path
        finally:
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def connected(path: str) -> AsyncIterator[Client]:
    client = await Client.connect_unix(path, timeout=5)
    try:
        yield client
    finally:
        client.close()
        await client.wait_closed()


async def echo(client: Client, method: str, value: str, **kw: Any) -> str:
    reply = await client.call("test.Echo", method, S(value=value), S, **kw)
    return reply.value


Call = Callable[..., Awaitable[str]]
