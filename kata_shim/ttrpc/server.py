"""asyncio ttrpc server: a thin Protocol over the sans-IO ServerConnection.

Owns listeners, transports and handler tasks. Each request runs as its own task
(a blocked handler never blocks others on the connection), except that a handler
marked `inline` (ttrpc.service.inline) runs right in data_received, and only
what is left of it if it waits after all goes on in a task (`_resume`).
`timeout_nano` is enforced here and only here (not for inline handlers); handler
outcomes become statuses through kata_shim.errors.status_for_exception. Frames
are written whole, one transport.write per frame (back-to-back writes of its
parts for `Encoded` replies), so writes never interleave. Serves unix listening
sockets (path or socket object) and already-open duplex character devices (a
virtio-serial port = one connection). An optional `observer`
(ttrpc.service.RpcObserver, a plain callable) is told each finished call's
method, status code and handling time; cancelled calls are not observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
import types
from collections.abc import Callable, Coroutine, Generator, Mapping
from types import MappingProxyType
from typing import Any

from kata_shim.errors import Code, status_for_exception
from kata_shim.ttrpc.connection import (
    Buffer,
    ProtocolError,
    RequestReceived,
    ServerConnection,
    StreamError,
)
from kata_shim.ttrpc.service import (
    Dispatcher,
    Encoded,
    PeerCredentials,
    RequestContext,
    RpcObserver,
    encode_response,
)
from kata_shim.ttrpc.wire import MAX_PAYLOAD

__all__ = ["Server"]

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")
_NO_METADATA: Mapping[str, tuple[str, ...]] = MappingProxyType({})


def peer_credentials(sock: socket.socket | None) -> PeerCredentials | None:
    """SO_PEERCRED of a connected unix socket, or None when unavailable."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def grow_send_buffer(sock: socket.socket, size: int) -> None:
    """Best effort: a send buffer that takes a whole large reply in one send() (no partial
    write left for the loop to buffer and copy). Over net.core.wmem_max only with
    CAP_NET_ADMIN (SO_SNDBUFFORCE); otherwise the kernel's cap applies."""
    for option in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            return
        except OSError:
            continue


def _metadata(request_metadata: object) -> dict[str, tuple[str, ...]]:
    merged: dict[str, list[str]] = {}
    for item in request_metadata:  # type: ignore[attr-defined]
        merged.setdefault(item.key.lower(), []).append(item.value)
    return {key: tuple(values) for key, values in merged.items()}


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], pending: Any) -> Generator[Any, Any, None]:
    """Go on, inside a task, with a coroutine that already ran up to its first wait (it
    yielded `pending`): the task waits on what the coroutine waits on, and passes its
    values, cancellation and close on to it, as `yield from` would."""
    while True:
        try:
            sent = yield pending
        except BaseException as exc:  # thrown in by the task: the coroutine's to handle
            try:
                pending = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            pending = coro.send(sent)
        except StopIteration:
            return


class _ServerProtocol(asyncio.Protocol):
    def __init__(self, server: Server, device_writer: asyncio.WriteTransport | None = None) -> None:
        self._server = server
        self._device_writer = device_writer
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conn = ServerConnection(server.max_payload)
        self._write: Callable[[Buffer], None] | None = None
        self._close: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._peer: PeerCredentials | None = None
        self._loop = asyncio.get_running_loop()

    # asyncio.Protocol -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = self._device_writer
        if writer is None:  # a socket: one transport for both directions
            sock = transport.get_extra_info("socket")
            if self._server.send_buffer and sock is not None:
                grow_send_buffer(sock, self._server.send_buffer)
            self.attach(transport, transport.close, sock)  # type: ignore[arg-type]
            return

        def close_both() -> None:
            transport.close()
            writer.close()

        self.attach(writer, close_both)

    def attach(
        self,
        writer: asyncio.WriteTransport,
        close: Callable[[], None],
        sock: socket.socket | None = None,
    ) -> None:
        """Start serving over `writer` and the `close` callable (socket or char device)."""
        self._write, self._close = writer.write, close
        self._peer = peer_credentials(sock)
        if self._server.require_same_uid and not self._peer_allowed():
            log.warning("rejecting ttrpc peer %s: uid/gid differ from ours", self._peer)
            close()
            return
        self._server._connections.add(self)

    def _peer_allowed(self) -> bool:
        peer = self._peer
        return peer is not None and peer.uid == os.geteuid() and peer.gid == os.getegid()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._conn.receive_data(data)
        except ProtocolError as exc:
            log.warning("closing ttrpc connection: %s", exc)
            self.abort()
            return
        for event in events:
            if isinstance(event, StreamError):
                self._send(event.stream_id, event.code, event.message, b"")
            else:
                self._spawn(event)

    def eof_received(self) -> bool | None:
        return False  # close our side too; in-flight handlers are cancelled

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        self._write = None
        for task in list(self._tasks):
            task.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    # requests -----------------------------------------------------------
    def abort(self) -> None:
        if self._close is not None:
            self._close()

    def _spawn(self, event: RequestReceived) -> None:
        request = event.request
        if not self._server.dispatcher.is_inline(request.service, request.method):
            self._track(self._loop.create_task(self._handle(event, inline=False)))
            return
        handling = self._handle(event, inline=True)
        try:
            pending = handling.send(None)  # answered here, unless it waits after all
        except StopIteration:
            return
        self._track(self._loop.create_task(_resume(handling, pending)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, event: RequestReceived, *, inline: bool) -> None:
        """Run one request and write its reply (one coroutine per request: no nested ones)."""
        observer = self._server.observer
        began = time.monotonic() if observer is not None else 0.0
        request = event.request
        timeout = request.timeout_nano / 1e9 if request.timeout_nano > 0 and not inline else None
        ctx = RequestContext(
            service=request.service,
            method=request.method,
            deadline=time.monotonic() + timeout if timeout is not None else None,
            metadata=_metadata(request.metadata) if request.metadata else _NO_METADATA,
            peer=self._peer,
        )
        dispatcher = self._server.dispatcher
        try:
            method, handler, message = dispatcher.decode(ctx, request.payload)
            if timeout is None:  # most calls: no timer to arm and cancel
                response = await handler(ctx, message)
            else:
                async with asyncio.timeout(timeout):
                    response = await handler(ctx, message)
            payload = encode_response(method, response)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every handler outcome becomes a status
            code, text = status_for_exception(exc)
            self._send(event.stream_id, code, text, b"")
        else:
            code = Code.OK
            self._reply(event.stream_id, payload)
        if observer is not None:
            observer(request.service, request.method, code, time.monotonic() - began)

    def _reply(self, stream_id: int, payload: bytes | Encoded) -> None:
        if not isinstance(payload, Encoded):
            self._send(stream_id, Code.OK, "", payload)
            return
        write = self._write
        if write is not None:  # back to back, no await: the frame stays whole
            for part in self._conn.respond_parts(stream_id, payload.parts):
                write(part)  # (writelines would join them: a copy on asyncio's loop)

    def _send(self, stream_id: int, code: int, message: str, payload: bytes) -> None:
        if self._write is not None:
            self._write(self._conn.respond(stream_id, code, message, payload))


class _WriteSide(asyncio.Protocol):
    """Protocol for the write half of a duplex character device."""


class Server:
    """Serves a Dispatcher's services on any number of listeners."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        require_same_uid: bool = False,
        max_payload: int = MAX_PAYLOAD,
        send_buffer: int = 0,
        observer: RpcObserver | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.observer = observer  # told (service, method, code, seconds) after each call
        self.require_same_uid = require_same_uid
        self.max_payload = max_payload
        self.send_buffer = send_buffer  # > 0: SO_SNDBUF of accepted sockets (large replies)
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[_ServerProtocol] = set()
        self._devices: list[asyncio.BaseTransport] = []

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def serve_unix(self, path: str, *, mode: int = 0o600, backlog: int = 128) -> None:
        """Listen on a filesystem unix socket at `path` (replacing a stale file)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, mode)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        await self.serve_socket(sock)

    async def serve_socket(self, sock: socket.socket) -> None:
        """Serve an already bound and listening stream socket (unix or AF_VSOCK)."""
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        factory = lambda: _ServerProtocol(self)  # noqa: E731
        if sock.family == socket.AF_UNIX:
            server = await loop.create_unix_server(factory, sock=sock)
        else:
            server = await loop.create_server(factory, sock=sock)
        self._servers.append(server)

    async def serve_device(self, fd: int) -> asyncio.Future[None]:
        """Serve one ttrpc connection over an open duplex character device fd.

        `fd` stays owned by the caller (it is duplicated). Returns a future that
        resolves when the connection ends (peer EOF or error), so a caller can
        serve the device again for the next peer.
        """
        loop = asyncio.get_running_loop()
        reader = os.fdopen(os.dup(fd), "rb", buffering=0)
        writer = os.fdopen(os.dup(fd), "wb", buffering=0)
        write_transport, _ = await loop.connect_write_pipe(_WriteSide, writer)
        protocol = _ServerProtocol(self, device_writer=write_transport)
        read_transport, _ = await loop.connect_read_pipe(lambda: protocol, reader)
        self._devices += [read_transport, write_transport]
        return protocol.closed

    def close(self) -> None:
        """Stop listening and drop every connection (in-flight handlers are cancelled)."""
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn.abort()
        for transport in self._devices:
            transport.close()

    async def wait_closed(self) -> None:
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
