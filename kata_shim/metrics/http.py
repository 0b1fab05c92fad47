"""A tiny HTTP/1.1 server and client on asyncio streams (unix or TCP sockets).

Enough for scrapes: GET/HEAD, one request per connection (`Connection: close`),
a bounded request head (8 KiB, 5 s), routes by path, query string parsed.
Standard library only, so the shim does not pay for an HTTP framework; used by
the per-sandbox management endpoint and by kata-shim-monitor (server and
scraper).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

__all__ = ["HEAD_LIMIT", "Request", "Response", "Route", "bind_unix", "get_unix", "handler_for"]

log = logging.getLogger(__name__)

HEAD_LIMIT = 8192
HEAD_TIMEOUT = 5.0
REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    500: "Internal Server Error",
}  # fmt: skip


class Request:
    """Method, path and query (last value per key) of one request."""

    __slots__ = ("method", "path", "query")

    def __init__(self, method: str, path: str, query: Mapping[str, str]) -> None:
        self.method, self.path, self.query = method, path, query


class Response:
    __slots__ = ("body", "content_type", "status")

    def __init__(
        self, status: int = 200, body: bytes = b"", content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.status, self.body, self.content_type = status, body, content_type

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode())


Route = Callable[[Request], Awaitable[Response]]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _parse_head(head: bytes) -> Request | None:
    try:
        line = head.split(b"\r\n", 1)[0].decode("ascii")
        method, target, version = line.split(" ")
    except (UnicodeDecodeError, ValueError):
        return None
    if not version.startswith("HTTP/1."):
        return None
    parts = urlsplit(target)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return Request(method, parts.path or "/", query)


def _encode(response: Response, head_only: bool) -> bytes:
    reason = REASONS.get(response.status, "Unknown")
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + response.body


async def _respond(routes: Mapping[str, Route], request: Request | None) -> Response:
    if request is None:
        return Response.text("bad request\n", 400)
    if request.method not in ("GET", "HEAD"):
        return Response.text("only GET and HEAD\n", 405)
    route = routes.get(request.path)
    if route is None:
        return Response.text(f"no such path; try: {' '.join(sorted(routes))}\n", 404)
    try:
        return await route(request)
    except Exception as exc:
        log.exception("HTTP %s failed", request.path)
        return Response.text(f"internal error: {exc}\n", 500)


def handler_for(routes: Mapping[str, Route]) -> StreamHandler:
    """An asyncio.start_*_server client handler serving `routes` (path → coroutine)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            request = _parse_head(head)
            response = await _respond(routes, request)
            writer.write(_encode(response, request is not None and request.method == "HEAD"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return handle


def bind_unix(path: str, mode: int = 0o600) -> socket.socket:
    """A listening unix socket at `path` (a stale file replaced), created with `mode`."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), mode)  # Linux: bind() creates the file with this mode
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


async def get_unix(path: str, target: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `target` from an HTTP server on unix socket `path`: (status, body)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise OSError(f"bad HTTP reply from {path}: {raw[:80]!r}") from exc
    return status, body
