"""Decoding protobuf messages the same way on every supported protobuf runtime.

Debian 12's python3-protobuf 3.21 (C++ implementation) does not refuse bytes after a stray
end-group tag: it warns "Unexpected end-group tag: Not all data was converted" and keeps what it
parsed, where the upb runtime (4.22+) raises DecodeError. `parse` makes both refuse, so a
malformed ttrpc frame gets the same InvalidArgument everywhere; the warning itself is silenced
because the caller sees a DecodeError instead.
"""

from __future__ import annotations

import warnings

from google.protobuf.message import DecodeError, Message

__all__ = ["DecodeError", "parse"]

warnings.filterwarnings("ignore", "Unexpected end-group tag", RuntimeWarning)


def parse(message: Message, data: bytes | memoryview) -> None:
    """`message.ParseFromString(data)`, raising DecodeError unless every byte was consumed."""
    consumed = message.ParseFromString(data)
    if consumed is not None and consumed != len(data):
        name = message.DESCRIPTOR.full_name
        raise DecodeError(f"{name}: {len(data) - consumed} bytes after an end-group tag")
