"""pbwire: the hand-walked wire shapes agree with the generated protobuf classes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kata_shim.pbwire import (
    WireError,
    encode_varint,
    last_len_field,
    len_field_header,
    split_response,
)
from kata_shim.proto import agent_pb2, status_pb2, ttrpc_pb2


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_varint_matches_protobuf(value: int) -> None:
    encoded = agent_pb2.WaitProcessResponse(status=0).SerializeToString()  # empty
    assert encoded == b""
    probe = status_pb2.Status()
    probe.ParseFromString(b"\x08" + encode_varint(value))  # code = 1 (int32: low 32 bits)
    expected = value & 0xFFFFFFFF
    assert probe.code == (expected - (1 << 32) if expected >= 1 << 31 else expected)


def test_negative_varint_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        encode_varint(-1)


@given(st.binary(max_size=2000))
def test_header_plus_data_is_the_protobuf_encoding(data: bytes) -> None:
    expected = agent_pb2.ReadStreamResponse(data=data).SerializeToString()
    ours = len_field_header(1, len(data)) + data if data else b""
    assert ours == expected
    assert bytes(last_len_field(expected, 1)) == data


@given(
    payload=st.binary(max_size=500),
    code=st.integers(min_value=0, max_value=16),
    message=st.text(max_size=40),
)
def test_split_response_matches_protobuf(payload: bytes, code: int, message: str) -> None:
    response = ttrpc_pb2.Response(payload=payload)
    if code:
        response.status.code = code
        response.status.message = message
    status, view = split_response(response.SerializeToString())
    assert bytes(view) == payload
    if code:
        assert status is not None
        parsed = status_pb2.Status()
        parsed.ParseFromString(status)
        assert (parsed.code, parsed.message) == (code, message)
    else:
        assert status is None


def test_unknown_fields_are_skipped_and_the_last_value_wins() -> None:
    unknown = b"\x18\x96\x01" + b"\x21" + bytes(8) + b"\x2d" + bytes(4)  # varint, i64, i32
    message = b"\x0a\x01a" + unknown + b"\x0a\x02bc" + b"\x12\x01z"
    assert bytes(last_len_field(message, 1)) == b"bc"
    assert bytes(last_len_field(message, 2)) == b"z"
    assert bytes(last_len_field(message, 7)) == b""
    parsed = agent_pb2.ReadStreamResponse()
    parsed.ParseFromString(message)
    assert parsed.data == b"bc"


def test_views_share_the_frame_memory() -> None:
    frame = bytearray(len_field_header(2, 3) + b"abc")
    _, view = split_response(frame)
    frame[-1:] = b"Z"
    assert bytes(view) == b"abZ"


@pytest.mark.parametrize(
    "bad",
    [b"\x0a\x05abc", b"\x0a", b"\x80", b"\x0b", b"\x00\x01", b"\x0a" + b"\xff" * 11],
    ids=["short-data", "no-length", "cut-varint", "group-wire-type", "field-zero", "long-varint"],
)
def test_malformed_input_raises_wire_error(bad: bytes) -> None:
    with pytest.raises(WireError):
        split_response(bad)
    with pytest.raises(WireError):
        last_len_field(bad, 1)
