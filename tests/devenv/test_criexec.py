"""The CRI streaming client's WebSocket side against a scripted server on a socketpair."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Callable

import pytest

from kata_shim.devenv import criexec

SUCCESS = {"metadata": {}, "status": "Success"}
EXIT_3 = {
    "metadata": {},
    "status": "Failure",
    "message": "command terminated with non-zero exit code: exit status 3",
    "reason": "NonZeroExitCode",
    "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
}


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        return struct.pack("!BB", first, len(payload)) + payload
    return struct.pack("!BBH", first, 126, len(payload)) + payload


def read_client_frame(sock: socket.socket) -> tuple[int, bytes]:
    """(opcode, unmasked payload); asserts the frame is masked and final."""
    first, second = sock.recv(2, socket.MSG_WAITALL)
    assert first & 0x80 and second & 0x80, "client frames are final and masked"
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))
    mask = sock.recv(4, socket.MSG_WAITALL)
    data = sock.recv(size, socket.MSG_WAITALL) if size else b""
    return first & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def accept_upgrade(sock: socket.socket, protocol: str = criexec.PROTOCOL) -> str:
    """Read the GET upgrade, answer 101; returns the request text."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += sock.recv(4096)
    text = request.decode()
    key = next(line.split(":", 1)[1].strip() for line in text.split("\r\n") if "Key:" in line)
    accept = base64.b64encode(hashlib.sha1(key.encode() + criexec.ACCEPT_GUID).digest()).decode()
    sock.sendall(
        f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n".encode()
    )
    return text


def run_server(script: Callable[[socket.socket], None]) -> tuple[socket.socket, threading.Thread]:
    client, server = socket.socketpair()
    thread = threading.Thread(target=script, args=(server,), daemon=True)
    thread.start()
    return client, thread


def test_exec_session_channels_fragments_ping_status_and_close() -> None:
    seen: dict[str, object] = {}

    def script(sock: socket.socket) -> None:
        seen["request"] = accept_upgrade(sock)
        sock.sendall(server_frame(0x2, b"\x01"))  # the server's empty "ready" message
        seen["stdin"] = read_client_frame(sock)
        seen["resize"] = read_client_frame(sock)
        sock.sendall(server_frame(0x2, b"\x01got:", fin=False) + server_frame(0x0, b"hi\n"))
        sock.sendall(server_frame(0x9, b"p1"))
        seen["pong"] = read_client_frame(sock)
        sock.sendall(server_frame(0x2, b"\x02err\n"))
        sock.sendall(server_frame(0x2, b"\x03" + json.dumps(EXIT_3).encode()))
        sock.sendall(server_frame(0x8, struct.pack("!H", 1000)))
        seen["close"] = read_client_frame(sock)
        sock.close()

    client, thread = run_server(script)
    session = criexec.StreamSession(client, timeout=10)
    host, port, request, accept = criexec.handshake_request("http://127.0.0.1:4321/exec/tok")
    assert (host, port) == ("127.0.0.1", 4321)
    session.handshake(request, accept)
    session.send_stdin(b"hi\n")
    session.resize(80, 24)
    result = session.finish()
    session.close()
    thread.join(10)
    assert str(seen["request"]).startswith("GET /exec/tok HTTP/1.1\r\n")
    assert "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n" in str(seen["request"])
    assert seen["stdin"] == (0x2, b"\x00hi\n")
    assert seen["resize"] == (0x2, b'\x04{"Width": 80, "Height": 24}')
    assert seen["pong"] == (0xA, b"p1")
    assert seen["close"] == (0x8, struct.pack("!H", 1000))
    assert (result.stdout, result.stderr, result.exit_code) == (b"got:hi\n", b"err\n", 3)


def test_long_stdin_uses_the_16_bit_length() -> None:
    payload = b"x" * 300
    got: list[tuple[int, bytes]] = []

    def script(sock: socket.socket) -> None:
        accept_upgrade(sock)
        _, second = sock.recv(2, socket.MSG_WAITALL)
        (size,) = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))
        mask = sock.recv(4, socket.MSG_WAITALL)
        data = sock.recv(size, socket.MSG_WAITALL)
        got.append((second & 0x7F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))))
        sock.close()

    client, thread = run_server(script)
    session = criexec.StreamSession(client, timeout=10)
    session.handshake(*criexec.handshake_request("http://127.0.0.1:1/attach/t")[2:])
    session.send_stdin(payload)
    thread.join(10)
    client.close()
    assert got == [(126, b"\x00" + payload)]


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"HTTP/1.1 404 Not Found\r\n\r\n404 page not found\n", "upgrade refused"),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "upgrade refused"),
    ],
)
def test_refused_upgrade_is_an_error(reply: bytes, match: str) -> None:
    def script(sock: socket.socket) -> None:
        sock.recv(4096)
        sock.sendall(reply)
        sock.close()

    client, thread = run_server(script)
    session = criexec.StreamSession(client, timeout=10)
    with pytest.raises(criexec.StreamError, match=match):
        session.handshake(*criexec.handshake_request("http://127.0.0.1:1/exec/gone")[2:])
    thread.join(10)
    client.close()


def test_wrong_subprotocol_and_masked_server_frames_are_refused() -> None:
    client, thread = run_server(lambda sock: (accept_upgrade(sock, "channel.k8s.io"), sock.close()))
    with pytest.raises(criexec.StreamError, match="did not agree"):
        criexec.StreamSession(client, timeout=10).handshake(
            *criexec.handshake_request("http://127.0.0.1:1/exec/x")[2:]
        )
    thread.join(10)
    client.close()

    def masked(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.sendall(b"\x82\x81abcd\x60")
        sock.close()

    client, thread = run_server(masked)
    session = criexec.StreamSession(client, timeout=10)
    session.handshake(*criexec.handshake_request("http://127.0.0.1:1/exec/x")[2:])
    with pytest.raises(criexec.StreamError, match="masked"):
        session.finish()
    thread.join(10)
    client.close()


def test_exit_code_from_status() -> None:
    assert criexec.exit_code(SUCCESS) == 0
    assert criexec.exit_code(EXIT_3) == 3
    internal = {"status": "Failure", "reason": "InternalError", "message": "no such container"}
    with pytest.raises(criexec.StreamError, match="no such container"):
        criexec.exit_code(internal)


def test_only_plain_http_urls() -> None:
    with pytest.raises(criexec.StreamError, match="http://"):
        criexec.handshake_request("https://127.0.0.1:1/exec/x")
