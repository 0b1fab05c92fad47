"""read_some (the Cython one and its pure-Python twin, same outcomes) and grow_pipe.

Every read_some case runs both implementations and requires the same outcome. Signals:
a read blocked on an empty pipe runs the Python handler (PEP 475); a raising handler
aborts it with its exception, a quiet one lets it go on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pty
import signal
import socket
import threading
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kata_shim import _fastio
from kata_shim.io import copy

pytestmark = pytest.mark.timeout(60)

ReadSome = Callable[[int, int], bytes]
IMPLS: dict[str, ReadSome] = {"cython": _fastio.read_some, "python": copy.py_read_some}


def outcome(fn: Callable[[], Any]) -> Any:
    """fn()'s result, or a comparable description of what it raised."""
    try:
        return ("ok", fn())
    except OSError as exc:
        return ("raised", type(exc).__name__, exc.errno)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def run_both(case: Callable[[ReadSome], Any]) -> Any:
    """Run case with each implementation; they must agree. Returns the common outcome."""
    results = {name: outcome(lambda impl=impl: case(impl)) for name, impl in IMPLS.items()}
    assert results["cython"] == results["python"], results
    return results["python"]


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_the_compiled_read_some_is_selected() -> None:
    assert copy.IMPLEMENTATION == "cython"
    assert copy.read_some is _fastio.read_some


def test_read_some_partial_then_eof(pipe: tuple[int, int]) -> None:
    r, w = pipe

    def case(read_some: ReadSome) -> list[bytes]:
        os.write(w, b"abcdef")
        return [read_some(r, 3), read_some(r, 1 << 20), read_some(r, 0)]

    assert run_both(case) == ("ok", [b"abc", b"def", b""])
    os.close(w)
    assert run_both(lambda read_some: read_some(r, 10)) == ("ok", b"")


def test_read_some_returns_exactly_what_was_read(pipe: tuple[int, int]) -> None:
    r, w = pipe
    copy.grow_pipe(w)
    data = bytes(range(256)) * 1024  # 256 KiB, less than maxlen

    def case(read_some: ReadSome) -> bool:
        os.write(w, data)
        got = read_some(r, 1 << 20)
        return type(got) is bytes and got == data

    assert run_both(case) == ("ok", True)


def test_read_some_on_every_kind_of_fd(tmp_path: Path) -> None:
    """FIONREAD sizes the read on sockets, files and ptys; /dev/zero has none (maxlen)."""
    a, b = socket.socketpair()
    master, slave = pty.openpty()
    tty.setraw(slave)
    (tmp_path / "f").write_bytes(b"0123456789")
    with a, b, open(tmp_path / "f", "rb") as f, open("/dev/zero", "rb") as zero:
        try:

            def case(read_some: ReadSome) -> list[bytes]:
                b.send(b"sock")
                os.write(slave, b"tty")
                f.seek(0)
                got = [read_some(a.fileno(), 100), read_some(f.fileno(), 4)]
                got += [read_some(f.fileno(), 1 << 20), read_some(zero.fileno(), 5)]
                return [*got, read_some(master, 100)]

            assert run_both(case) == ("ok", [b"sock", b"0123", b"456789", b"\0" * 5, b"tty"])
        finally:
            os.close(master)
            os.close(slave)


def test_read_some_eagain_is_blocking_io_error(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    os.set_blocking(r, False)
    assert run_both(lambda read_some: read_some(r, 10)) == (
        "raised",
        "BlockingIOError",
        errno.EAGAIN,
    )


def test_read_some_errors() -> None:
    assert run_both(lambda read_some: read_some(-1, 10)) == ("raised", "OSError", errno.EBADF)
    assert run_both(lambda read_some: read_some(0, -1)) == (
        "raised",
        "ValueError",
        "maxlen must be >= 0",
    )


class Interrupted(Exception):
    pass


class Handler:
    """SIGUSR1's handler while a test runs: counts calls, raises Interrupted if asked to."""

    def __init__(self) -> None:
        self.calls, self.raises = 0, False

    def __call__(self, signum: int, frame: object) -> None:
        self.calls += 1
        if self.raises:
            raise Interrupted


@pytest.fixture
def sigusr1() -> Iterator[Handler]:
    handler = Handler()
    old = signal.signal(signal.SIGUSR1, handler)
    yield handler
    signal.signal(signal.SIGUSR1, old)


def _signal_soon(delay: float = 0.2) -> threading.Timer:
    timer = threading.Timer(
        delay, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1)
    )
    timer.start()
    return timer


@pytest.mark.parametrize("raises", [True, False])
def test_a_signal_during_a_blocked_read(
    raises: bool, sigusr1: Handler, pipe: tuple[int, int]
) -> None:
    """A raising handler aborts the read; a quiet one runs and the read goes on."""
    r, w = pipe

    def case(read_some: ReadSome) -> object:
        sigusr1.calls, sigusr1.raises = 0, raises
        timer = _signal_soon()
        feeder = threading.Timer(0.5, os.write, (w, b"late"))
        feeder.start()
        try:
            return read_some(r, 100), sigusr1.calls
        except Interrupted:
            return "interrupted", sigusr1.calls
        finally:
            timer.cancel()
            feeder.join()
            with contextlib.suppress(BlockingIOError):
                os.set_blocking(r, False)
                os.read(r, 100)  # what the feeder wrote after an aborted read
            os.set_blocking(r, True)

    expected = ("interrupted", 1) if raises else (b"late", 1)
    assert run_both(case) == ("ok", expected)


def test_grow_pipe_enlarges_pipes_and_leaves_other_fds(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        assert copy.grow_pipe(w) == copy.PIPE_SIZE  # root here: within pipe-max-size
        # refused: the size stays, and is reported
        assert copy.grow_pipe(r, 1 << 40) == copy.PIPE_SIZE
    finally:
        os.close(r)
        os.close(w)
    with open(tmp_path / "f", "wb") as regular:
        assert copy.grow_pipe(regular.fileno()) == 0
