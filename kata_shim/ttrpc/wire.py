"""ttrpc framing: the 10-byte header and a push-style frame decoder (sans-IO).

Header = payload length (u32), stream id (u32), type (u8), flags (u8), all
big-endian. Payloads above `MAX_PAYLOAD` (4 MiB) are skipped without being
buffered and reported as `OversizeFrame` so the caller can answer that stream
with ResourceExhausted and keep the connection. A length whose reserved top
byte is set (≥ 16 MiB) cannot come from a conforming peer: `ProtocolError`.
No IO and no asyncio here; the Cython `_framing` module provides the same API.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "NEED_DATA",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "OversizeFrame",
    "ProtocolError",
    "encode_frame",
]

HEADER: Final = struct.Struct(">IIBB")
HEADER_SIZE: Final = HEADER.size
MAX_PAYLOAD: Final = 4 << 20
RESERVED_LENGTH: Final = 1 << 24


class FrameType(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


class ProtocolError(Exception):
    """The byte stream cannot be a ttrpc stream; the connection must be closed."""


class _NeedData:
    """Sentinel: the decoder needs more bytes before it can return a frame."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class OversizeFrame:
    """A frame whose payload exceeded the limit and was discarded."""

    stream_id: int
    type: int
    length: int


def encode_frame(stream_id: int, frame_type: int, payload: bytes, flags: int = 0) -> bytes:
    """Header + payload as one bytes object (one write per frame)."""
    return HEADER.pack(len(payload), stream_id, frame_type, flags) + payload


class PyFrameDecoder:
    """Accumulates bytes with `feed`; `next_frame` pops frames in order."""

    __slots__ = ("_buf", "_max_payload", "_skip", "_skipped")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._max_payload = max_payload
        self._skip = 0  # payload bytes of an oversize frame still to discard
        self._skipped: OversizeFrame | None = None

    def feed(self, data: bytes) -> None:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> Frame | OversizeFrame | _NeedData:
        if self._skip:
            return NEED_DATA
        if self._skipped is not None:
            done, self._skipped = self._skipped, None
            return done
        if len(self._buf) < HEADER_SIZE:
            return NEED_DATA
        length, stream_id, frame_type, flags = HEADER.unpack_from(self._buf)
        if length >= RESERVED_LENGTH:
            raise ProtocolError(f"frame length {length} has the reserved byte set")
        if length > self._max_payload:
            return self._start_skip(length, stream_id, frame_type)
        end = HEADER_SIZE + length
        if len(self._buf) < end:
            return NEED_DATA
        payload = bytes(self._buf[HEADER_SIZE:end])
        del self._buf[:end]
        return Frame(stream_id, frame_type, flags, payload)

    def _start_skip(
        self, length: int, stream_id: int, frame_type: int
    ) -> OversizeFrame | _NeedData:
        oversize = OversizeFrame(stream_id, frame_type, length)
        available = len(self._buf) - HEADER_SIZE
        if available >= length:
            del self._buf[: HEADER_SIZE + length]
            return oversize
        del self._buf[:]
        self._skip = length - available
        self._skipped = oversize
        return NEED_DATA


FrameDecoder: type[PyFrameDecoder]
try:  # the compiled decoder has the same API and semantics
    from kata_shim.ttrpc._framing import FrameDecoder as _CFrameDecoder

    FrameDecoder = _CFrameDecoder
    IMPLEMENTATION = "cython"
except ImportError:  # pragma: no cover - exercised when the extension is not built
    FrameDecoder = PyFrameDecoder
    IMPLEMENTATION = "python"
