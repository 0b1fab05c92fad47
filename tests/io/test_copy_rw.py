"""write_all / read_some / drain_into, and signals during blocking calls: both implementations.

Like test_copy.py, every case runs the Cython and the pure-Python implementation and
requires the same outcome (`run_both`). Signals: a blocked call runs the Python handler
(PEP 475); a raising handler aborts the call with its exception, a quiet one lets it go on.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.io.endpoints import IMPLS, Impl, Sink, Source, run_both

pytestmark = pytest.mark.timeout(120)


class Interrupted(Exception):
    pass


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


# ---------------------------------------------------------------- write_all
@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"abc",
        bytearray(b"xyz" * 1000),
        memoryview(b"0123456789")[2:7],
        array.array("i", range(100)),
    ],
    ids=["empty", "bytes", "bytearray", "memoryview-slice", "int-array"],
)
def test_write_all_accepts_bytes_like(payload: object, tmp_path: Path) -> None:
    def case(impl: Impl) -> tuple[int, bytes]:
        sink = Sink("pipe", tmp_path)
        count = impl.write_all(sink.fd, payload)
        return count, sink.finish()

    expected = memoryview(payload).cast("B").tobytes()  # type: ignore[arg-type]
    assert run_both(case) == ("ok", (len(expected), expected))


def test_write_all_nonblocking_slow_reader(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)  # 16 times the pipe buffer: EAGAIN, then poll

    def case(impl: Impl) -> tuple[int, bool]:
        sink = Sink("pipe", tmp_path, nonblock=True, slow=True)
        count = impl.write_all(sink.fd, memoryview(data))
        return count, sink.finish() == data

    assert run_both(case) == ("ok", (len(data), True))


@pytest.mark.parametrize("kind", ["closed", "closed-socket"])
def test_write_all_closed_reader_epipe(kind: str, tmp_path: Path) -> None:
    def case(impl: Impl) -> int:
        sink = Sink(kind, tmp_path)
        try:
            return impl.write_all(sink.fd, b"data" * 100_000)
        finally:
            sink.finish()

    assert run_both(case) == ("raised", "BrokenPipeError", errno.EPIPE)


def test_write_all_rejects_non_buffers() -> None:
    assert run_both(lambda impl: impl.write_all(1, "text"))[:2] == ("raised", "TypeError")


def test_write_all_bad_fd() -> None:
    assert run_both(lambda impl: impl.write_all(-1, b"x")) == ("raised", "OSError", errno.EBADF)


# ---------------------------------------------------------------- read_some
def test_read_some_partial_then_eof(pipe: tuple[int, int]) -> None:
    r, w = pipe

    def case(impl: Impl) -> list[bytes]:
        os.write(w, b"hello")
        return [impl.read_some(r, 3), impl.read_some(r, 100), impl.read_some(r, 0)]

    assert run_both(case) == ("ok", [b"hel", b"lo", b""])
    os.close(w)
    assert run_both(lambda impl: impl.read_some(r, 10)) == ("ok", b"")


def test_read_some_eagain_is_blocking_io_error(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    os.set_blocking(r, False)
    assert run_both(lambda impl: impl.read_some(r, 10)) == (
        "raised",
        "BlockingIOError",
        errno.EAGAIN,
    )


def test_read_some_errors() -> None:
    assert run_both(lambda impl: impl.read_some(-1, 10)) == ("raised", "OSError", errno.EBADF)
    assert run_both(lambda impl: impl.read_some(0, -1)) == (
        "raised",
        "ValueError",
        "maxlen must be >= 0",
    )


# ---------------------------------------------------------------- drain_into
def test_drain_into_appends_in_place(pipe: tuple[int, int]) -> None:
    r, w = pipe

    def case(impl: Impl) -> tuple[list[int], bytes]:
        os.write(w, b"abcdef")
        buf = bytearray(b">")
        counts = [impl.drain_into(r, buf, 4), impl.drain_into(r, buf, 100)]
        return counts, bytes(buf)

    assert run_both(case) == ("ok", ([4, 2], b">abcdef"))
    os.close(w)
    assert run_both(lambda impl: impl.drain_into(r, bytearray(b"x"), 100)) == ("ok", 0)


def test_drain_into_eagain_leaves_buffer_alone(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    os.set_blocking(r, False)

    def case(impl: Impl) -> object:
        buf = bytearray(b"keep")
        try:
            impl.drain_into(r, buf, 1000)
        except BlockingIOError as exc:
            return exc.errno, bytes(buf)
        return "no error"

    assert run_both(case) == ("ok", (errno.EAGAIN, b"keep"))


def test_drain_into_exported_buffer(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"data")

    def case(impl: Impl) -> int:
        buf = bytearray(b"x")
        with memoryview(buf):
            return impl.drain_into(r, buf, 2)

    assert run_both(case)[:2] == ("raised", "BufferError")


def test_drain_into_errors() -> None:
    assert run_both(lambda impl: impl.drain_into(-1, bytearray(), 5)) == (
        "raised",
        "OSError",
        errno.EBADF,
    )
    assert run_both(lambda impl: impl.drain_into(0, bytearray(), -1))[:2] == (
        "raised",
        "ValueError",
    )


# ---------------------------------------------------------------- signals
def _signal_soon(delay: float = 0.2) -> threading.Timer:
    timer = threading.Timer(
        delay, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1)
    )
    timer.start()
    return timer


class Handler:
    """SIGUSR1's handler while a test runs: counts calls, raises Interrupted if asked to."""

    def __init__(self) -> None:
        self.calls, self.raises = 0, False

    def __call__(self, signum: int, frame: object) -> None:
        self.calls += 1
        if self.raises:
            raise Interrupted

    def reset(self, raises: bool) -> Handler:
        self.calls, self.raises = 0, raises
        return self


@pytest.fixture
def sigusr1() -> Iterator[Handler]:
    handler = Handler()
    old = signal.signal(signal.SIGUSR1, handler)
    yield handler
    signal.signal(signal.SIGUSR1, old)


# (source kind, sink kind): read/write, read/write into O_APPEND, splice into a pipe
BLOCKING = [("pipe", "pipe"), ("pipe", "append"), ("socket", "pipe")]


@pytest.mark.parametrize(("src", "dst"), BLOCKING)
def test_raising_handler_aborts_a_blocked_copy(
    src: str, dst: str, sigusr1: Handler, tmp_path: Path
) -> None:
    def case(impl: Impl) -> object:
        sigusr1.reset(raises=True)
        source = Source(src, os.urandom(1000), tmp_path, delay=3.0)  # writes only after 3 s
        sink = Sink(dst, tmp_path)
        timer, started = _signal_soon(), time.monotonic()
        try:
            impl.copy_fd(source.fd, sink.fd)
            return "finished without the signal"
        except Interrupted:
            return "interrupted", time.monotonic() - started < 2.0
        finally:
            timer.cancel()
            sink.finish()
            source.close()

    assert run_both(case) == ("ok", ("interrupted", True))


@pytest.mark.parametrize(("src", "dst"), BLOCKING)
def test_quiet_handler_lets_a_blocked_copy_go_on(
    src: str, dst: str, sigusr1: Handler, tmp_path: Path
) -> None:
    data = os.urandom(100_000)

    def case(impl: Impl) -> object:
        sigusr1.reset(raises=False)
        source = Source(src, data, tmp_path, delay=0.5)
        sink = Sink(dst, tmp_path)
        timer = _signal_soon()
        try:
            count = impl.copy_fd(source.fd, sink.fd)
        finally:
            timer.cancel()
            received = sink.finish()
            source.close()
        return count, received == data, sigusr1.calls

    assert run_both(case) == ("ok", (len(data), True, 1))


@pytest.mark.parametrize("call", ["read_some", "drain_into", "write_all"])
def test_raising_handler_aborts_blocked_small_calls(
    call: str, sigusr1: Handler, pipe: tuple[int, int]
) -> None:
    _, w = pipe
    os.set_blocking(w, False)
    while True:  # fill the pipe so that write_all blocks
        try:
            os.write(w, b"x" * 65536)
        except BlockingIOError:
            break
    os.set_blocking(w, True)
    empty_r, empty_w = os.pipe()

    def case(impl: Impl) -> object:
        sigusr1.reset(raises=True)
        timer = _signal_soon()
        try:
            if call == "read_some":
                impl.read_some(empty_r, 10)
            elif call == "drain_into":
                buf = bytearray(b"keep")
                impl.drain_into(empty_r, buf, 10)
            else:
                impl.write_all(w, b"y" * 100)
            return "finished without the signal"
        except Interrupted:
            return "interrupted"
        finally:
            timer.cancel()

    try:
        assert run_both(case) == ("ok", "interrupted")
    finally:
        os.close(empty_r)
        os.close(empty_w)


def test_both_implementations_are_listed() -> None:
    assert [impl.name for impl in IMPLS] == ["cython", "python"]
