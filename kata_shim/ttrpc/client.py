"""asyncio ttrpc client: a thin Protocol over the sans-IO ClientConnection.

Owns one connection's transport and the futures of its in-flight calls. Calls
are multiplexed (odd, increasing stream ids); a per-call timeout is sent as
`timeout_nano` and also enforced locally (DeadlineExceeded). Error statuses are
raised as the matching ShimError via kata_shim.errors.error_from_status. When
the connection closes every in-flight call fails at once with
Unavailable("ttrpc: closed").
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from google.protobuf.message import Message

from kata_shim.errors import Code, DeadlineExceeded, ShimError, Unavailable, error_from_status
from kata_shim.protoparse import DecodeError, parse
from kata_shim.ttrpc.connection import ClientConnection, ProtocolError, ResponseReceived
from kata_shim.ttrpc.service import RpcObserver, ZeroCopyField
from kata_shim.ttrpc.wire import MAX_PAYLOAD

__all__ = ["Client"]

M = TypeVar("M", bound=Message)

CLOSED_MESSAGE = "ttrpc: closed"


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self._client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
        self._client._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._client._data_received(data)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._connection_lost()


class Client:
    """One ttrpc client connection. Create with `connect_unix` or `from_socket`."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._conn = ClientConnection(max_payload)
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[ResponseReceived]] = {}
        self._closed = False
        self._closed_event = asyncio.Event()
        self._close_callbacks: list[Callable[[], None]] = []
        #: told (service, method, code, seconds) after each call (see ttrpc.service.RpcObserver)
        self.observer: RpcObserver | None = None

    # construction -------------------------------------------------------------
    @classmethod
    async def connect_unix(cls, path: str, *, timeout: float | None = None) -> Client:
        """Connect to a filesystem unix socket (`unix://` prefix accepted)."""
        path = path.removeprefix("unix://")
        client = cls()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_unix_connection(lambda: _ClientProtocol(client), path)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"timed out connecting to {path}") from exc
        return client

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> Client:
        """Use an already connected stream socket, unix or vsock (the client takes ownership)."""
        client = cls()
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            await loop.create_unix_connection(lambda: _ClientProtocol(client), sock=sock)
        else:
            await loop.create_connection(lambda: _ClientProtocol(client), sock=sock)
        return client

    # state --------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Run `callback` once when the connection is lost or closed."""
        if self._closed:
            callback()
        else:
            self._close_callbacks.append(callback)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            self._connection_lost()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    # calls --------------------------------------------------------------------
    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> M:
        """Send one unary request and return the decoded response."""
        payload = await self.call_encoded(
            service, method, request, timeout=timeout, metadata=metadata
        )
        message: M = response_type()
        try:
            parse(message, payload)
        except DecodeError as exc:
            raise Unavailable(f"cannot decode {response_type.__name__}: {exc}") from exc
        return message

    async def call_zero_copy(
        self,
        service: str,
        method: str,
        request: Message,
        field: ZeroCopyField,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> memoryview:
        """Send one unary request; return the response's zero-copy `field` as a view into
        the received frame, without building the response message (generated clients)."""
        payload = await self.call_encoded(
            service, method, request, timeout=timeout, metadata=metadata
        )
        return field.decode(payload)

    async def call_encoded(
        self,
        service: str,
        method: str,
        request: Message,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> bytes | memoryview:
        """Like `call`, but return the response message still encoded (a view, no copy)."""
        observer = self.observer
        if observer is None:
            return await self._call(service, method, request, timeout, metadata)
        began = time.monotonic()  # a cancelled call is not observed (no outcome)
        try:
            payload = await self._call(service, method, request, timeout, metadata)
        except ShimError as exc:
            observer(service, method, exc.code, time.monotonic() - began)
            raise
        observer(service, method, Code.OK, time.monotonic() - began)
        return payload

    async def _call(
        self,
        service: str,
        method: str,
        request: Message,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> bytes | memoryview:
        if self._closed or self._transport is None:
            raise Unavailable(CLOSED_MESSAGE)
        timeout_nano = int(timeout * 1e9) if timeout else 0
        stream_id, frame = self._conn.start_request(
            service, method, request.SerializeToString(), timeout_nano, (metadata or {}).items()
        )
        future: asyncio.Future[ResponseReceived] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = future
        self._transport.write(frame)
        try:
            async with asyncio.timeout(timeout):
                response = await future
        except TimeoutError as exc:
            raise DeadlineExceeded(f"{service}/{method}: deadline exceeded") from exc
        finally:
            self._pending.pop(stream_id, None)
            self._conn.abandon(stream_id)
        if response.code:
            raise error_from_status(response.code, response.message)
        return response.payload

    # protocol callbacks ---------------------------------------------------------
    def _data_received(self, data: bytes) -> None:
        try:
            responses = self._conn.receive_data(data)
        except ProtocolError:
            self.close()
            return
        for response in responses:
            future = self._pending.get(response.stream_id)
            if future is not None and not future.done():
                future.set_result(response)

    def _connection_lost(self) -> None:
        if self._closed:
            return
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable(CLOSED_MESSAGE))
        self._pending.clear()
        self._closed_event.set()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            with contextlib.suppress(Exception):
                callback()
