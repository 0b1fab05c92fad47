"""Protobuf wire format by hand, copy-free, standard library only (no protobuf import).

Two users: the stdio hot path (below), and the shim's `start`/`delete` actions
(shim/minipb.py), which must not pay protobuf's import time.


The generic path (protobuf messages in, `SerializeToString` out) copies a stream
chunk five or six times between the agent's read() and the shim's write(); a
1 MiB ReadStdout reply made the agent, not the pipes, the throughput limit.
This module encodes and decodes only the wire shapes that path needs, as
headers plus memoryviews over the payload, so the data bytes themselves are
never copied in user space:
* `len_field_header`: the tag+length prefix of a length-delimited field
  (the caller sends the data right after it);
* `split_response`: a ttrpc `Response` (status = 1, payload = 2) into views;
* `last_len_field`: the last occurrence of one length-delimited field of a
  message (proto3 semantics), e.g. `ReadStreamResponse.data` (= 1).
Unknown fields of any wire type are skipped, as protobuf parsers do.
"""

from __future__ import annotations

__all__ = [
    "WireError",
    "encode_varint",
    "fields",
    "last_len_field",
    "len_field_header",
    "split_response",
]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_FIXED_SIZE = {_I64: 8, _I32: 4}
_EMPTY = memoryview(b"")


class WireError(ValueError):
    """The bytes are not a valid protobuf encoding of the expected message."""


def encode_varint(value: int) -> bytes:
    """Unsigned varint; negative int32/int64 values must be passed as their uint64 form."""
    if value < 0:
        raise ValueError("varint must be >= 0")
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def len_field_header(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited field; the `length` data bytes follow."""
    return encode_varint(number << 3 | _LEN) + encode_varint(length)


def _varint(buf: memoryview, index: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if index >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = buf[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, index


def fields(message: bytes | memoryview) -> list[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) in wire order: an int for varints, a view of the
    message for length-delimited and fixed-size values."""
    buf = memoryview(message)
    found: list[tuple[int, int, int | memoryview]] = []
    index, end = 0, len(buf)
    while index < end:
        key, index = _varint(buf, index)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == _VARINT:
            value, index = _varint(buf, index)
            found.append((number, wire_type, value))
            continue
        if wire_type == _LEN:
            size, index = _varint(buf, index)
        elif wire_type in _FIXED_SIZE:
            size = _FIXED_SIZE[wire_type]
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        if index + size > end:
            raise WireError("truncated field")
        found.append((number, wire_type, buf[index : index + size]))
        index += size
    return found


def _len_values(message: bytes | memoryview) -> list[tuple[int, memoryview]]:
    return [
        (number, value)
        for number, wire_type, value in fields(message)
        if wire_type == _LEN and isinstance(value, memoryview)
    ]


def last_len_field(message: bytes | memoryview, number: int) -> memoryview:
    """The last value of length-delimited field `number` (empty when absent), as a view."""
    value = _EMPTY
    for field_number, view in _len_values(message):
        if field_number == number:
            value = view
    return value


def split_response(response: bytes | memoryview) -> tuple[memoryview | None, memoryview]:
    """A ttrpc Response as (encoded google.rpc.Status or None, payload view)."""
    status: memoryview | None = None
    payload = _EMPTY
    for number, view in _len_values(response):
        if number == 1:
            status = view
        elif number == 2:
            payload = view
    return status, payload
