"""Connection bookkeeping: stream ids, per-stream errors, envelopes."""

from __future__ import annotations

from kata_shim.errors import Code
from kata_shim.proto import ttrpc_pb2
from kata_shim.ttrpc import wire
from kata_shim.ttrpc.connection import (
    ClientConnection,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
    StreamError,
)


def request_frame(stream_id: int, service: str = "svc", method: str = "M") -> bytes:
    body = ttrpc_pb2.Request(service=service, method=method, payload=b"p").SerializeToString()
    return wire.encode_frame(stream_id, wire.FrameType.REQUEST, body)


def test_client_stream_ids_are_odd_and_increasing() -> None:
    client = ClientConnection()
    ids = [client.start_request("s", "m", b"")[0] for _ in range(4)]
    assert ids == [1, 3, 5, 7]
    assert client.in_flight == {1, 3, 5, 7}


def test_client_request_encodes_timeout_and_metadata() -> None:
    client = ClientConnection()
    _, frame = client.start_request("s", "m", b"x", 2_000_000_000, [("k", "v"), ("k", "w")])
    request = ttrpc_pb2.Request.FromString(frame[wire.HEADER_SIZE :])
    assert request.timeout_nano == 2_000_000_000
    assert [(kv.key, kv.value) for kv in request.metadata] == [("k", "v"), ("k", "w")]


def test_server_decodes_requests() -> None:
    events = ServerConnection().receive_data(request_frame(1) + request_frame(3))
    assert [type(e) for e in events] == [RequestReceived, RequestReceived]
    assert events[0].request.service == "svc" and events[1].stream_id == 3


def test_even_stream_id_is_rejected_with_invalid_argument() -> None:
    (event,) = ServerConnection().receive_data(request_frame(2))
    assert event == StreamError(
        2, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams"
    )


def test_oversize_request_becomes_resource_exhausted() -> None:
    server = ServerConnection(max_payload=32)
    (event,) = server.receive_data(wire.encode_frame(5, 1, b"x" * 100) + b"")
    assert isinstance(event, StreamError) and event.code == Code.RESOURCE_EXHAUSTED
    assert event.message == "message length 100 exceed maximum message size of 32"
    (after,) = server.receive_data(request_frame(7))
    assert isinstance(after, RequestReceived)


def test_undecodable_request_is_invalid_argument() -> None:
    (event,) = ServerConnection().receive_data(wire.encode_frame(1, 1, b"\xff\xff\xff"))
    assert isinstance(event, StreamError) and event.code == Code.INVALID_ARGUMENT


def test_non_request_frames_are_ignored() -> None:
    data = wire.encode_frame(1, wire.FrameType.DATA, b"x") + wire.encode_frame(3, 9, b"")
    assert ServerConnection().receive_data(data) == []


def test_ok_response_has_no_status_and_error_response_has_one() -> None:
    server = ServerConnection()
    ok = ttrpc_pb2.Response.FromString(server.respond(1, 0, "", b"pay")[wire.HEADER_SIZE :])
    assert not ok.HasField("status") and ok.payload == b"pay"
    err = ttrpc_pb2.Response.FromString(server.respond(3, 5, "gone", b"")[wire.HEADER_SIZE :])
    assert (err.status.code, err.status.message) == (5, "gone")


def test_ok_response_frames_are_byte_identical_to_protobufs_encoding() -> None:
    server = ServerConnection()
    for size in (0, 1, 127, 128, 16383, 16384, 70000):
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        frame = server.respond(7, 0, "", payload)
        body = ttrpc_pb2.Response(payload=payload).SerializeToString()
        assert frame == wire.encode_frame(7, wire.FrameType.RESPONSE, body), size


def test_client_matches_responses_and_ignores_unknown_streams() -> None:
    client, server = ClientConnection(), ServerConnection()
    sid, _ = client.start_request("s", "m", b"")
    data = server.respond(99, 0, "", b"stray") + server.respond(sid, 0, "", b"")
    assert client.receive_data(data) == [ResponseReceived(sid, 0, "", b"")]
    assert client.in_flight == frozenset()


def test_empty_response_payload_is_ok() -> None:
    client = ClientConnection()
    sid, _ = client.start_request("s", "m", b"")
    (event,) = client.receive_data(wire.encode_frame(sid, wire.FrameType.RESPONSE, b""))
    assert event == ResponseReceived(sid, 0, "", b"")


def test_abandoned_stream_ignores_late_response() -> None:
    client = ClientConnection()
    sid, _ = client.start_request("s", "m", b"")
    client.abandon(sid)
    assert client.receive_data(ServerConnection().respond(sid, 0, "", b"late")) == []
