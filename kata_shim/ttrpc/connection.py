"""ttrpc connection bookkeeping (sans-IO): streams, envelopes, per-stream errors.

`ServerConnection` turns received bytes into `RequestReceived` events, or into
`StreamError`s for problems that concern one stream only (oversize payload,
even stream id, undecodable envelope) — the server answers those and keeps the
connection. `ClientConnection` numbers requests with odd, increasing stream ids
and turns Response frames into `ResponseReceived`. A `ProtocolError` from the
decoder means the byte stream is broken: close the connection.
No IO and no asyncio here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from kata_shim.errors import Code
from kata_shim.pbwire import WireError, len_field_header, split_response
from kata_shim.proto import status_pb2, ttrpc_pb2
from kata_shim.protoparse import DecodeError, parse
from kata_shim.ttrpc.wire import (
    HEADER,
    MAX_PAYLOAD,
    NEED_DATA,
    Frame,
    FrameDecoder,
    FrameType,
    OversizeFrame,
    ProtocolError,
    PyFrameDecoder,
    encode_frame,
)

__all__ = [
    "ClientConnection",
    "ProtocolError",
    "RequestReceived",
    "ResponseReceived",
    "ServerConnection",
    "StreamError",
]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    stream_id: int
    request: ttrpc_pb2.Request


@dataclass(frozen=True, slots=True)
class StreamError:
    """A request that must be answered with an error status; the connection stays up."""

    stream_id: int
    code: Code
    message: str


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    stream_id: int
    code: int
    message: str
    payload: bytes | memoryview  # a view into the received frame (no copy)


Buffer = bytes | bytearray | memoryview


E = TypeVar("E")


def _events(
    decoder: PyFrameDecoder, data: bytes, event_for: Callable[[Frame | OversizeFrame], E | None]
) -> list[E]:
    """Feed `data` to `decoder` (either implementation); the events of the frames it completes
    (None: no event)."""
    decoder.feed(data)
    events: list[E] = []
    while True:
        frame = decoder.next_frame()
        if frame is NEED_DATA:
            return events
        event = event_for(frame)  # type: ignore[arg-type]  # not NEED_DATA here
        if event is not None:
            events.append(event)


def _oversize_message(length: int, limit: int) -> str:
    return f"message length {length} exceed maximum message size of {limit}"


class ServerConnection:
    """Server side of one ttrpc connection."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._decoder = FrameDecoder(max_payload)

    def receive_data(self, data: bytes) -> list[RequestReceived | StreamError]:
        """Feed bytes; return the events they complete. Raises ProtocolError."""
        return _events(self._decoder, data, self._event_for)

    def _event_for(self, frame: Frame | OversizeFrame) -> RequestReceived | StreamError | None:
        if frame.type != FrameType.REQUEST:
            return None  # ttrpc 1.1 ignores every other frame type
        if frame.stream_id % 2 == 0:
            return StreamError(
                frame.stream_id,
                Code.INVALID_ARGUMENT,
                "StreamID must be odd for client initiated streams",
            )
        if isinstance(frame, OversizeFrame):
            message = _oversize_message(frame.length, self.max_payload)
            return StreamError(frame.stream_id, Code.RESOURCE_EXHAUSTED, message)
        request = ttrpc_pb2.Request()
        try:
            parse(request, frame.payload)
        except DecodeError as exc:
            return StreamError(frame.stream_id, Code.INVALID_ARGUMENT, f"bad request: {exc}")
        return RequestReceived(frame.stream_id, request)

    def respond(self, stream_id: int, code: int, message: str, payload: bytes) -> bytes:
        """Encode a Response frame. An OK response carries no status (like Go ttrpc): its
        body is the payload field alone, framed here without a protobuf message."""
        if not code:
            body = len_field_header(2, len(payload)) + payload if payload else b""
        else:
            response = ttrpc_pb2.Response(payload=payload)
            response.status.code = code
            response.status.message = message
            body = response.SerializeToString()
        if len(body) > self.max_payload:
            return self.respond(
                stream_id,
                Code.RESOURCE_EXHAUSTED,
                _oversize_message(len(body), self.max_payload),
                b"",
            )
        return encode_frame(stream_id, FrameType.RESPONSE, body)

    def respond_parts(self, stream_id: int, parts: tuple[Buffer, ...]) -> list[Buffer]:
        """An OK Response frame whose payload is `parts` concatenated, as buffers to send
        in order without joining them (the payload bytes are never copied here)."""
        size = sum(len(part) for part in parts)
        prefix = len_field_header(2, size) if size else b""  # Response.payload = 2
        body_size = len(prefix) + size
        if body_size > self.max_payload:
            message = _oversize_message(body_size, self.max_payload)
            return [self.respond(stream_id, Code.RESOURCE_EXHAUSTED, message, b"")]
        header = HEADER.pack(body_size, stream_id, FrameType.RESPONSE, 0)
        return [header + prefix, *parts]


class ClientConnection:
    """Client side of one ttrpc connection."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._decoder = FrameDecoder(max_payload)
        self._next_stream_id = 1
        self._in_flight: set[int] = set()

    @property
    def in_flight(self) -> frozenset[int]:
        return frozenset(self._in_flight)

    def start_request(
        self,
        service: str,
        method: str,
        payload: bytes,
        timeout_nano: int = 0,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> tuple[int, bytes]:
        """Allocate the next odd stream id and encode the Request frame."""
        request = ttrpc_pb2.Request(
            service=service, method=method, payload=payload, timeout_nano=timeout_nano
        )
        for key, value in metadata:
            request.metadata.add(key=key, value=value)
        body = request.SerializeToString()
        if len(body) > self.max_payload:
            raise ValueError(_oversize_message(len(body), self.max_payload))
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        self._in_flight.add(stream_id)
        return stream_id, encode_frame(stream_id, FrameType.REQUEST, body)

    def abandon(self, stream_id: int) -> None:
        """Forget a stream (local timeout); a late response for it is ignored."""
        self._in_flight.discard(stream_id)

    def receive_data(self, data: bytes) -> list[ResponseReceived]:
        """Feed bytes; return completed responses for streams still in flight."""
        return _events(self._decoder, data, self._event_for)

    def _event_for(self, frame: Frame | OversizeFrame) -> ResponseReceived | None:
        if frame.type != FrameType.RESPONSE or frame.stream_id not in self._in_flight:
            return None
        self._in_flight.discard(frame.stream_id)
        if isinstance(frame, OversizeFrame):
            message = _oversize_message(frame.length, self.max_payload)
            return ResponseReceived(frame.stream_id, Code.RESOURCE_EXHAUSTED, message, b"")
        try:  # by hand: the payload stays a view into the frame (stdio chunks are large)
            encoded_status, payload = split_response(frame.payload)
            status = status_pb2.Status()
            if encoded_status is not None:
                parse(status, encoded_status)
        except (WireError, DecodeError) as exc:
            return ResponseReceived(frame.stream_id, Code.INTERNAL, f"bad response: {exc}", b"")
        return ResponseReceived(frame.stream_id, status.code, status.message, payload)
