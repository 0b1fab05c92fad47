"""copy_fd: the Cython loop and its pure-Python twin give the same results on the same cases.

Every case runs both implementations (`run_both`) and checks that they agree, then
checks the expected result. Pairings cover the copy paths: splice from a non-pipe into a
pipe (file→pipe, socket→pipe), read/write for every other pairing, and the read/write
fallback when splice refuses the fds.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
from pathlib import Path

import pytest

from tests.io.endpoints import IMPLS, Impl, Sink, Source, run_both, transfer

pytestmark = pytest.mark.timeout(120)

PAIRINGS = [
    ("pipe", "pipe"),  # read/write (splice measured slower with a pipe source)
    ("file", "pipe"),  # splice into the pipe
    ("socket", "pipe"),  # splice into the pipe
    ("pipe", "file"),  # read/write
    ("file", "file"),  # read/write
    ("socket", "file"),  # read/write
    ("file", "socket"),  # read/write
    ("pipe", "append"),  # read/write into an O_APPEND file
    ("file", "append"),  # read/write into an O_APPEND file
]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(("src", "dst"), PAIRINGS)
@pytest.mark.parametrize("size", [0, 1, 65537, 3 << 20])
def test_pairings_copy_everything(src: str, dst: str, size: int, tmp_path: Path) -> None:
    data = os.urandom(size)
    assert run_both(lambda impl: transfer(impl, src, dst, data, tmp_path)) == (
        "ok",
        (size, data, b""),
    )


@pytest.mark.parametrize(("src", "dst"), PAIRINGS)
@pytest.mark.parametrize("limit", [1, 4095, 100_000, 1 << 20])
def test_limit_stops_early_and_leaves_the_rest(
    src: str, dst: str, limit: int, tmp_path: Path
) -> None:
    data = os.urandom(1 << 20 | 123)
    outcome = run_both(
        lambda impl: transfer(impl, src, dst, data, tmp_path, limit=limit, bufsize=65536)
    )
    assert outcome == ("ok", (limit, data[:limit], data[limit:]))


@pytest.mark.parametrize(("src", "dst"), PAIRINGS)
def test_small_bufsize(src: str, dst: str, tmp_path: Path) -> None:
    data = os.urandom(300_001)
    outcome = run_both(lambda impl: transfer(impl, src, dst, data, tmp_path, bufsize=1000))
    assert outcome == ("ok", (len(data), data, b""))


def test_limit_zero_touches_nothing() -> None:
    assert run_both(lambda impl: impl.copy_fd(-1, -1, 0)) == ("ok", 0)


@pytest.mark.parametrize(("src", "dst"), [("pipe", "pipe"), ("file", "file")])
def test_64_mib_random_sha256(src: str, dst: str, tmp_path: Path) -> None:
    data = os.urandom(64 << 20)

    def case(impl: Impl) -> tuple[int, str]:
        count, received, _ = transfer(impl, src, dst, data, tmp_path)
        return count, hashlib.sha256(received).hexdigest()

    assert run_both(case) == ("ok", (len(data), hashlib.sha256(data).hexdigest()))


@pytest.mark.parametrize(("src", "dst"), [("file", "pipe"), ("pipe", "pipe"), ("file", "socket")])
def test_nonblocking_destination_slow_reader(src: str, dst: str, tmp_path: Path) -> None:
    data = os.urandom(2 << 20)  # far beyond the pipe/socket buffers: EAGAIN, then poll
    outcome = run_both(
        lambda impl: transfer(impl, src, dst, data, tmp_path, nonblock=True, slow=True)
    )
    assert outcome == ("ok", (len(data), data, b""))


@pytest.mark.parametrize(
    ("src", "dst", "slow"),
    [
        ("pipe", "pipe", False),
        ("pipe", "pipe", True),
        ("pipe", "append", False),
        ("socket", "file", False),
    ],
)
def test_nonblocking_source_trickling_writer(
    src: str, dst: str, slow: bool, tmp_path: Path
) -> None:
    """An empty non-blocking source (EAGAIN) is waited for, also when the sink is full too."""
    data = os.urandom(256 << 10)
    outcome = run_both(
        lambda impl: transfer(
            impl, src, dst, data, tmp_path, src_nonblock=True, trickle=True, slow=slow
        )
    )
    assert outcome == ("ok", (len(data), data, b""))


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("pipe", "closed"),
        ("file", "closed"),
        ("socket", "closed"),
        ("pipe", "closed-socket"),
        ("file", "closed-socket"),
    ],
)
def test_closed_reader_raises_epipe(src: str, dst: str, tmp_path: Path) -> None:
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # as Python sets it up
    data = os.urandom(200_000)
    outcome = run_both(lambda impl: transfer(impl, src, dst, data, tmp_path))
    assert outcome == ("raised", "BrokenPipeError", errno.EPIPE)


def test_eof_right_away(tmp_path: Path) -> None:
    for src in ("pipe", "socket", "file"):
        assert run_both(lambda impl, src=src: transfer(impl, src, "pipe", b"", tmp_path)) == (
            "ok",
            (0, b"", b""),
        )


@pytest.mark.parametrize(("src", "dst"), [("file", "file"), ("file", "append"), ("file", "closed")])
def test_private_pipe_is_closed_afterwards(src: str, dst: str, tmp_path: Path) -> None:
    def case(impl: Impl) -> bool:
        source, sink = Source(src, os.urandom(100_000), tmp_path), Sink(dst, tmp_path)
        before = open_fds()
        try:
            impl.copy_fd(source.fd, sink.fd)
        except OSError:
            pass
        finally:
            after = open_fds()
            sink.finish()
            source.close()
        return before == after

    assert run_both(case) == ("ok", True)


@pytest.mark.parametrize("bad", [(-1, 1), (1 << 20, 1)])
def test_bad_fds_give_the_same_errno(bad: tuple[int, int], tmp_path: Path) -> None:
    src, dst = bad
    assert run_both(lambda impl: impl.copy_fd(src, dst)) == ("raised", "OSError", errno.EBADF)


def test_wrong_direction_gives_the_same_errno(tmp_path: Path) -> None:
    """Copying from a write-only fd: the same errno in both."""
    r, w = os.pipe()
    try:
        assert run_both(lambda impl: impl.copy_fd(w, r)) == ("raised", "OSError", errno.EBADF)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda impl: impl.name)
def test_bad_bufsize_rejected(impl: Impl) -> None:
    with pytest.raises(ValueError, match="bufsize must be positive"):
        impl.copy_fd(0, 1, -1, 0)


def test_grow_pipe_enlarges_pipes_and_leaves_other_fds(tmp_path: Path) -> None:
    from kata_shim.io.copy import PIPE_SIZE, grow_pipe

    r, w = os.pipe()
    try:
        assert grow_pipe(w) == PIPE_SIZE  # root here: within pipe-max-size
        assert grow_pipe(r, 1 << 40) == PIPE_SIZE  # refused: the size stays, and is reported
    finally:
        os.close(r)
        os.close(w)
    with open(tmp_path / "f", "wb") as regular:
        assert grow_pipe(regular.fileno()) == 0
