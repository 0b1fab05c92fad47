"""A blocking, thread-safe ttrpc client, shaped like the Rust `ttrpc` sync client lib-shim-v2 uses.

One connection per container id; any thread may call; a reader thread routes
responses by stream id. Calls carry `timeout_nano = 0` and wait without a
deadline on our side too — exactly lib-shim-v2's `context::with_timeout(0)`:
a shim RPC that never answers hangs the caller. Tests bound that with pytest's
timeout instead of hiding it here. Address forms follow lib-shim-v2's
`new_conn`: `unix://<path>` is a filesystem socket, anything else (also
`ttrpc+unix://`, used by sandboxers only) an abstract one; vsock is refused
(never on this host).

Deliberately independent of kata_shim.ttrpc: it is the other side of the wire.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from dataclasses import dataclass

from google.protobuf.message import Message

from kata_shim.proto import ttrpc_pb2

__all__ = ["RpcError", "SyncClient", "connect"]

_HEADER = struct.Struct(">IIBB")
_REQUEST, _RESPONSE = 1, 2


@dataclass
class RpcError(Exception):
    """A non-OK google.rpc.Status (code, message), or code -1 when the connection broke."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"rpc error: code = {self.code} desc = {self.message}"


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: ttrpc_pb2.Response | None = None


def connect(address: str) -> socket.socket:
    """lib-shim-v2's `new_conn`: the address is used verbatim (a trailing newline breaks it)."""
    if address.startswith("ttrpc+vsock://"):
        raise RpcError(-1, "vsock addresses are not used on this host")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if address.startswith("unix://"):
            path = os.path.join("/", address.removeprefix("unix://"))
            sock.connect(path)
        else:
            sock.connect("\0" + os.path.join("/", address))
    except OSError:
        sock.close()
        raise
    return sock


class SyncClient:
    """ttrpc over one unix stream socket; `call` blocks until the response (no deadline)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def call(self, service: str, method: str, request: Message, reply: Message) -> Message:
        pending = _Pending()
        with self._lock:
            if self._closed:
                raise RpcError(-1, "connection closed")
            stream_id = self._next_id
            self._next_id += 2
            self._pending[stream_id] = pending
        wire = ttrpc_pb2.Request(
            service=service, method=method, payload=request.SerializeToString(), timeout_nano=0
        ).SerializeToString()
        try:
            with self._send_lock:
                self._sock.sendall(_HEADER.pack(len(wire), stream_id, _REQUEST, 0) + wire)
        except OSError as exc:
            self._fail_all()
            raise RpcError(-1, f"send: {exc}") from exc
        pending.done.wait()
        response = pending.response
        if response is None:
            raise RpcError(-1, "connection closed before the response")
        if response.status.code:
            raise RpcError(response.status.code, response.status.message)
        reply.ParseFromString(response.payload)
        return reply

    def close(self) -> None:
        """Close the socket (the reader thread then fails every pending call)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _recv_exact(self, size: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < size:
            try:
                chunk = self._sock.recv(size - len(chunks))
            except OSError:
                return None
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)

    def _read_loop(self) -> None:
        while True:
            header = self._recv_exact(_HEADER.size)
            if header is None:
                break
            length, stream_id, kind, _flags = _HEADER.unpack(header)
            payload = self._recv_exact(length) if length else b""
            if payload is None:
                break
            if kind != _RESPONSE:
                continue
            with self._lock:
                pending = self._pending.pop(stream_id, None)
            if pending is not None:
                response = ttrpc_pb2.Response()
                response.ParseFromString(payload)
                pending.response = response
                pending.done.set()
        self._fail_all()
        self._sock.close()

    def _fail_all(self) -> None:
        with self._lock:
            self._closed = True
            pending, self._pending = list(self._pending.values()), {}
        for item in pending:
            item.done.set()
