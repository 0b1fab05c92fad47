"""The tiny HTTP/1.1 server and client (kata_shim.metrics.http) on a unix socket."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from kata_shim.metrics.http import Request, Response, bind_unix, get_unix, handler_for

pytestmark = pytest.mark.timeout(30)


async def _hello(request: Request) -> Response:
    return Response.text(f"hello {request.query.get('who', 'nobody')}\n")


async def _broken(request: Request) -> Response:
    raise RuntimeError("boom")


async def _raw(path: str, data: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    reply = await reader.read()
    writer.close()
    return reply


def test_routes_statuses_and_head(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sock")

    async def main() -> list[object]:
        sock = bind_unix(path)
        handler = handler_for({"/hello": _hello, "/broken": _broken})
        server = await asyncio.start_unix_server(handler, sock=sock)
        try:
            return [
                await get_unix(path, "/hello?who=me"),
                (await get_unix(path, "/nope"))[0],
                (await get_unix(path, "/broken"))[0],
                await _raw(path, b"POST /hello HTTP/1.1\r\n\r\n"),
                await _raw(path, b"HEAD /hello HTTP/1.1\r\n\r\n"),
                await _raw(path, b"garbage\r\n\r\n"),
            ]
        finally:
            server.close()

    hello, missing, broken, post, head, garbage = asyncio.run(main())
    assert hello == (200, b"hello me\n")
    assert (missing, broken) == (404, 500)
    assert isinstance(post, bytes) and post.startswith(b"HTTP/1.1 405 ")
    assert isinstance(head, bytes) and head.startswith(b"HTTP/1.1 200 ")
    assert head.endswith(b"\r\n\r\n")  # no body
    assert b"Content-Length: 13\r\n" in head
    assert isinstance(garbage, bytes) and garbage.startswith(b"HTTP/1.1 400 ")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
