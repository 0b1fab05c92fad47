"""Copy endpoints for the copy-loop tests: pipes, sockets and files fed or drained by threads.

A `Source` yields `data` then EOF from an fd; a `Sink` collects what reaches its fd.
Both can be non-blocking, and trickle (a writer pausing between 4 KiB chunks, a slow
reader), so the EAGAIN paths of both copy implementations get exercised. Both
implementations are always run over the same endpoints by `run_both`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from kata_shim import _fastio
from kata_shim.io import copy


class Impl(NamedTuple):
    name: str
    copy_fd: Callable[..., int]
    write_all: Callable[..., int]
    read_some: Callable[..., bytes]
    drain_into: Callable[..., int]


IMPLS = [
    Impl("cython", _fastio.copy_fd, _fastio.write_all, _fastio.read_some, _fastio.drain_into),
    Impl("python", copy.py_copy_fd, copy.py_write_all, copy.py_read_some, copy.py_drain_into),
]
CHUNK = 4096


def outcome(fn: Callable[[], Any]) -> Any:
    """fn()'s result, or a comparable description of what it raised."""
    try:
        return ("ok", fn())
    except OSError as exc:
        return ("raised", type(exc).__name__, exc.errno)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def run_both(case: Callable[[Impl], Any]) -> Any:
    """Run case with each implementation; they must agree. Returns the common outcome."""
    results = {impl.name: outcome(lambda impl=impl: case(impl)) for impl in IMPLS}
    assert results["cython"] == results["python"], results
    return results["python"]


def _trickle_write(fd: int, data: bytes, trickle: bool) -> None:
    view = memoryview(data)
    step = CHUNK if trickle else len(data) or 1
    for start in range(0, len(data), step):
        if trickle:
            time.sleep(0.001)
        copy.py_write_all(fd, view[start : start + step])


class Source:
    """An fd of kind pipe, socket or file that yields `data`, then EOF.

    `delay`: the writer thread starts after that many seconds, or at close().
    """

    def __init__(
        self,
        kind: str,
        data: bytes,
        tmp: Path,
        *,
        nonblock: bool = False,
        trickle: bool = False,
        delay: float = 0.0,
    ) -> None:
        self.kind, self.thread, self.peer = kind, None, -1
        self.gate = threading.Event()
        if kind == "file":
            (tmp / "source").write_bytes(data)
            self.fd = os.open(tmp / "source", os.O_RDONLY)
        else:
            self.fd, self.peer = _pair(kind)
            self.thread = threading.Thread(target=self._feed, args=(data, trickle, delay))
            self.thread.start()
        os.set_blocking(self.fd, not nonblock)

    def _feed(self, data: bytes, trickle: bool, delay: float) -> None:
        try:
            if delay:
                self.gate.wait(delay)
            _trickle_write(self.peer, data, trickle)
        except OSError:
            pass  # the reader went away (error tests)
        finally:
            os.close(self.peer)

    def rest(self) -> bytes:
        """What the copy left unread (reads to EOF)."""
        os.set_blocking(self.fd, True)
        out = bytearray()
        while chunk := os.read(self.fd, 1 << 16):
            out += chunk
        return bytes(out)

    def close(self) -> None:
        self.gate.set()
        os.close(self.fd)
        if self.thread is not None:
            self.thread.join(30)


class Sink:
    """An fd of kind pipe, socket, file, append (O_APPEND file), closed (a pipe with no
    reader) or closed-socket (a socket whose peer is gone)."""

    def __init__(self, kind: str, tmp: Path, *, nonblock: bool = False, slow: bool = False) -> None:
        self.kind, self.path, self.thread = kind, tmp / "sink", None
        self.received = bytearray()
        if kind in ("file", "append"):
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_APPEND if kind == "append" else 0)
            self.fd = os.open(self.path, flags, 0o600)
        else:
            pair_kind = {"closed": "pipe", "closed-socket": "socket"}.get(kind, kind)
            self.fd, peer = _pair(pair_kind, reverse=True)
            if kind.startswith("closed"):
                os.close(peer)
            else:
                self.thread = threading.Thread(target=self._collect, args=(peer, slow))
                self.thread.start()
        os.set_blocking(self.fd, not nonblock)

    def _collect(self, fd: int, slow: bool) -> None:
        while chunk := os.read(fd, CHUNK if slow else 1 << 16):
            self.received += chunk
            if slow:
                time.sleep(0.0005)
        os.close(fd)

    def finish(self) -> bytes:
        """Close the fd and return everything that reached the sink."""
        os.close(self.fd)
        if self.thread is not None:
            self.thread.join(30)
        if self.kind in ("file", "append"):
            return self.path.read_bytes()
        return bytes(self.received)


def _pair(kind: str, reverse: bool = False) -> tuple[int, int]:
    """(our end, the thread's end) of a pipe or a unix socketpair."""
    if kind == "pipe":
        r, w = os.pipe()
        return (w, r) if reverse else (r, w)
    a, b = socket.socketpair()
    return a.detach(), b.detach()


def transfer(
    impl: Impl, src_kind: str, dst_kind: str, data: bytes, tmp: Path, **opts: Any
) -> tuple[int, bytes, bytes]:
    """copy_fd from a fresh source to a fresh sink: (returned count, received, left in source)."""
    limit, bufsize = opts.pop("limit", -1), opts.pop("bufsize", 1 << 20)
    src = Source(
        src_kind,
        data,
        tmp,
        nonblock=opts.pop("src_nonblock", False),
        trickle=opts.pop("trickle", False),
    )
    dst = Sink(dst_kind, tmp, **opts)
    try:
        count = impl.copy_fd(src.fd, dst.fd, limit, bufsize)
    finally:
        received = dst.finish()
        rest = src.rest()
        src.close()
    return count, received, rest
