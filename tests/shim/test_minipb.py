"""The hand-encoded protobuf of start/delete against the generated classes."""

from __future__ import annotations

import time

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim.proto import runtimeoptions_pb2, task_pb2
from kata_shim.shim.delete import response_bytes
from kata_shim.shim.minipb import delete_response, options_config_path, parse_fields

pytestmark = pytest.mark.timeout(10)


def test_delete_response_decodes_with_protobuf() -> None:
    before = time.time_ns()
    raw = response_bytes()
    after = time.time_ns()
    response = task_pb2.DeleteResponse()
    response.ParseFromString(raw)
    assert response.pid == 0
    assert response.exit_status == 137
    stamp = response.exited_at.seconds * 1_000_000_000 + response.exited_at.nanos
    assert before // 1000 <= stamp // 1000 <= after // 1000


@pytest.mark.parametrize("pid", [0, 1, 4242, 2**31 - 1])
def test_delete_response_roundtrip(pid: int) -> None:
    response = task_pb2.DeleteResponse()
    response.ParseFromString(delete_response(pid, 255, 1_700_000_000_123_456_789))
    assert (response.pid, response.exit_status) == (pid, 255)
    assert (response.exited_at.seconds, response.exited_at.nanos) == (1_700_000_000, 123_456_789)
    expected = task_pb2.DeleteResponse(pid=pid, exit_status=255)
    expected.exited_at.seconds, expected.exited_at.nanos = 1_700_000_000, 123_456_789
    assert delete_response(pid, 255, 1_700_000_000_123_456_789) == expected.SerializeToString()


@pytest.mark.parametrize(
    "type_url",
    ["runtimeoptions.v1.Options", "cri.runtimeoptions.v1.Options", "x/runtimeoptions.v1.Options"],
)
def test_options_config_path(type_url: str) -> None:
    options = runtimeoptions_pb2.Options(type_url="ignored", config_path="/etc/kata/foo.toml")
    any_bytes = AnyMessage(type_url=type_url, value=options.SerializeToString()).SerializeToString()
    assert options_config_path(any_bytes) == "/etc/kata/foo.toml"


def test_options_as_observed_from_containerd() -> None:
    path = b"/etc/kata/foo.toml"
    inner = b"\x12" + bytes([len(path)]) + path
    observed = b"\x0a\x19runtimeoptions.v1.Options\x12" + bytes([len(inner)]) + inner
    assert options_config_path(observed) == "/etc/kata/foo.toml"


def test_other_options_give_no_path() -> None:
    assert options_config_path(b"") is None
    other = AnyMessage(type_url="containerd.runc.v1.Options", value=b"\x12\x03abc")
    assert options_config_path(other.SerializeToString()) is None
    empty = AnyMessage(type_url="runtimeoptions.v1.Options", value=b"")
    assert options_config_path(empty.SerializeToString()) is None


def test_parse_fields_rejects_truncation() -> None:
    with pytest.raises(ValueError):
        parse_fields(b"\x0a\x05ab")
    with pytest.raises(ValueError):
        parse_fields(b"\x08\xff")
