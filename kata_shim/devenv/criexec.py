"""A WebSocket client for containerd's CRI streaming server (the URLs Exec and Attach return).

containerd 1.6 serves those URLs with Kubernetes' remotecommand server (vendored
in pkg/cri/streaming). A plain request is upgraded to SPDY/3.1; a WebSocket
upgrade (RFC 6455, GET, `Sec-WebSocket-Version: 13`) is accepted with the
subprotocols `v4.channel.k8s.io`, `channel.k8s.io`, their `base64.` variants or
none. We speak binary `v4.channel.k8s.io`: the first byte of every message is
its channel -- 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize. The server opens
with an empty stdout (or stderr) message; when the command or attach ends it
writes one JSON `metav1.Status` on channel 3 and closes. A non-zero exit is
`{"status": "Failure", "reason": "NonZeroExitCode", "details": {"causes":
[{"reason": "ExitCode", "message": "<code>"}]}}`. Resize messages carry JSON
`{"Width": w, "Height": h}`. v4 has no way to close stdin alone: closing the
socket ends stdin and the session.

Stdlib only (socket, hashlib, base64, json): the framing a test client needs is
small, and no WebSocket library is among the project's dependencies. Client
frames are masked (RFC 6455 5.3); server frames must not be.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ACCEPT_GUID",
    "PROTOCOL",
    "StreamError",
    "StreamResult",
    "StreamSession",
    "exit_code",
    "open_stream",
]

PROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, STATUS, RESIZE = range(5)
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_MAX_MESSAGE = 64 << 20

Connect = Callable[[str, int], socket.socket]


class StreamError(RuntimeError):
    """The streaming server refused the request, broke the protocol, or timed out."""


def exit_code(status: dict[str, Any]) -> int:
    """The command's exit code from a v4 status message (StreamError for other failures)."""
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in status.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
    raise StreamError(f"stream failed: {status.get('message') or status}")


@dataclass
class StreamResult:
    """What a finished session delivered: output per channel and the status JSON."""

    stdout: bytes = b""
    stderr: bytes = b""
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return exit_code(self.status)


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def handshake_request(url: str) -> tuple[str, int, bytes, str]:
    """(host, port, request bytes, expected Sec-WebSocket-Accept) for a GET upgrade of `url`."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise StreamError(f"{url}: only plain http:// streaming URLs are supported (TLS is off)")
    port = parts.port or 80
    key = base64.b64encode(os.urandom(16)).decode()
    accept = base64.b64encode(hashlib.sha1(key.encode() + ACCEPT_GUID).digest()).decode()
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
    )
    return parts.hostname, port, request.encode(), accept


class StreamSession:
    """One open WebSocket session on a streaming URL."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock, self.timeout = sock, timeout
        self._buf = b""
        self.closed = False
        self.result = StreamResult()

    # --- handshake ------------------------------------------------------------------------------

    def handshake(self, request: bytes, accept: str) -> None:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self._buf:
            self._fill(time.monotonic() + self.timeout)
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].split(" ")[1:2] != ["101"]:
            raise StreamError(f"upgrade refused: {lines[0]!r} {self._buf[:200]!r}")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        if headers.get("sec-websocket-accept") != accept:
            raise StreamError(f"bad Sec-WebSocket-Accept in {headers}")
        if headers.get("sec-websocket-protocol") != PROTOCOL:
            raise StreamError(f"server did not agree to {PROTOCOL}: {headers}")

    # --- sending --------------------------------------------------------------------------------

    def send(self, channel: int, data: bytes) -> None:
        self.sock.sendall(_frame(_BINARY, bytes([channel]) + data))

    def send_stdin(self, data: bytes) -> None:
        self.send(STDIN, data)

    def resize(self, width: int, height: int) -> None:
        self.send(RESIZE, json.dumps({"Width": width, "Height": height}).encode())

    # --- receiving ------------------------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StreamError(f"no data from the streaming server in time; so far {self.result}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise StreamError(f"no data from the streaming server; so far {self.result}") from None
        if not chunk:
            raise StreamError(f"streaming server closed the connection; so far {self.result}")
        self._buf += chunk

    def _take(self, size: int, deadline: float) -> bytes:
        while len(self._buf) < size:
            self._fill(deadline)
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def _read_frame(self, deadline: float) -> tuple[bool, int, bytes]:
        first, second = self._take(2, deadline)
        if second & 0x80:
            raise StreamError("the server sent a masked frame (RFC 6455 5.1)")
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._take(2, deadline))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._take(8, deadline))
        if size > _MAX_MESSAGE:
            raise StreamError(f"frame of {size} bytes is too large")
        return bool(first & 0x80), first & 0x0F, self._take(size, deadline)

    def _read_message(self, deadline: float) -> bytes | None:
        """The next data message (None once the server closed); answers pings."""
        parts: list[bytes] = []
        while True:
            fin, opcode, payload = self._read_frame(deadline)
            if opcode == _PING:
                self.sock.sendall(_frame(_PONG, payload))
            elif opcode == _CLOSE:
                self._close(payload[:2])
                return None
            elif opcode in (_CONT, _TEXT, _BINARY):
                parts.append(payload)
                if fin:
                    return b"".join(parts)

    def _dispatch(self, message: bytes) -> None:
        if not message:
            return
        channel, data = message[0], message[1:]
        if channel == STDOUT:
            self.result.stdout += data
        elif channel == STDERR:
            self.result.stderr += data
        elif channel == STATUS and data:
            self.result.status = json.loads(data)

    def pump(self, deadline: float) -> bool:
        """Read one message into `result`; False once the server closed."""
        message = self._read_message(deadline)
        if message is None:
            return False
        self._dispatch(message)
        return True

    def read_until(self, needle: bytes, *, channel: int = STDOUT, timeout: float = 0) -> bytes:
        """Read until `needle` is in the channel's output so far; returns that output."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            seen = self.result.stderr if channel == STDERR else self.result.stdout
            if needle in seen:
                return seen
            if self.closed or not self.pump(deadline):
                raise StreamError(f"stream ended without {needle!r}; got {self.result}")

    def finish(self, timeout: float = 0) -> StreamResult:
        """Read until the server closes (after the status message); the whole result."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.closed and self.pump(deadline):
            pass
        return self.result

    def _close(self, code: bytes) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):  # the server may already have gone
                self.sock.sendall(_frame(_CLOSE, code))

    def close(self) -> None:
        """Close the session (normal closure, 1000) and the socket."""
        self._close(struct.pack("!H", 1000))
        self.sock.close()

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stream(
    url: str, *, connect: Connect | None = None, timeout: float = 60.0
) -> StreamSession:
    """A session on `url`; `connect(host, port)` makes the socket (e.g. in another netns)."""
    host, port, request, accept = handshake_request(url)
    sock = (connect or _tcp)(host, port)
    session = StreamSession(sock, timeout)
    try:
        session.handshake(request, accept)
    except BaseException:
        sock.close()
        raise
    return session


def _tcp(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=30)
