"""The Cython copy loop and its pure-Python fallback give the same results."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
import time

import pytest

from kata_shim import _fastio
from kata_shim.io import copy

COPY = [_fastio.copy_fd, copy.py_copy_fd]
WRITE = [_fastio.write_all, copy.py_write_all]
READ = [_fastio.read_some, copy.py_read_some]
DRAIN = [_fastio.drain_into, copy.py_drain_into]

pytestmark = pytest.mark.timeout(60)


def feed_pipe(data: bytes, delay: float = 0.0) -> tuple[int, threading.Thread]:
    """A pipe whose read end yields `data` then EOF (written by a thread)."""
    r, w = os.pipe()

    def writer() -> None:
        if delay:
            time.sleep(delay)
        copy.py_write_all(w, data)
        os.close(w)

    thread = threading.Thread(target=writer)
    thread.start()
    return r, thread


def collect_pipe() -> tuple[int, threading.Thread, bytearray]:
    """A pipe whose read end is drained by a thread into the returned buffer."""
    r, w = os.pipe()
    out = bytearray()

    def reader() -> None:
        while chunk := os.read(r, 1 << 16):
            out.extend(chunk)
        os.close(r)

    thread = threading.Thread(target=reader)
    thread.start()
    return w, thread, out


@pytest.mark.parametrize("copy_fd", COPY)
@pytest.mark.parametrize("size", [0, 1, 65535, 3 << 20])
def test_pipe_to_pipe(copy_fd, size: int) -> None:
    data = os.urandom(size)
    src, writer = feed_pipe(data)
    dst, reader, out = collect_pipe()
    assert copy_fd(src, dst) == size
    os.close(dst)
    writer.join()
    reader.join()
    os.close(src)
    assert bytes(out) == data


@pytest.mark.parametrize("copy_fd", COPY)
def test_file_to_file_and_limit(copy_fd, tmp_path) -> None:
    data = os.urandom(1 << 20)
    (tmp_path / "in").write_bytes(data)
    with open(tmp_path / "in", "rb") as src, open(tmp_path / "out", "wb") as dst:
        assert copy_fd(src.fileno(), dst.fileno(), limit=1000) == 1000
        assert copy_fd(src.fileno(), dst.fileno()) == len(data) - 1000
    assert (tmp_path / "out").read_bytes() == data


@pytest.mark.parametrize("copy_fd", COPY)
def test_file_to_pipe_and_pipe_to_file(copy_fd, tmp_path) -> None:
    data = os.urandom(200_000)
    (tmp_path / "in").write_bytes(data)
    dst, reader, out = collect_pipe()
    with open(tmp_path / "in", "rb") as src:
        assert copy_fd(src.fileno(), dst) == len(data)
    os.close(dst)
    reader.join()
    src_pipe, writer = feed_pipe(bytes(out))
    with open(tmp_path / "out", "wb") as sink:
        assert copy_fd(src_pipe, sink.fileno()) == len(data)
    writer.join()
    os.close(src_pipe)
    assert (tmp_path / "out").read_bytes() == data


def test_64_mib_identical_sha256_both_ways() -> None:
    data = os.urandom(64 << 20)
    digests = []
    for copy_fd in COPY:
        src, writer = feed_pipe(data)
        dst, reader, out = collect_pipe()
        copy_fd(src, dst)
        os.close(dst)
        writer.join()
        reader.join()
        os.close(src)
        digests.append(hashlib.sha256(out).hexdigest())
    assert digests == [hashlib.sha256(data).hexdigest()] * 2


@pytest.mark.parametrize("write_all", WRITE)
def test_write_all_to_slow_nonblocking_reader(write_all) -> None:
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, os.O_NONBLOCK)
    data = os.urandom(1 << 20)  # far more than the 64 KiB pipe buffer: EAGAIN path
    out = bytearray()

    def slow_reader() -> None:
        while chunk := os.read(r, 4096):
            out.extend(chunk)
            time.sleep(0.0005)

    thread = threading.Thread(target=slow_reader)
    thread.start()
    assert write_all(w, memoryview(data)) == len(data)
    os.close(w)
    thread.join()
    os.close(r)
    assert bytes(out) == data


def test_closed_reader_gives_the_same_errno() -> None:
    results = []
    for impl in (*COPY, *WRITE):
        r, w = os.pipe()
        os.close(r)
        src, writer = feed_pipe(b"x" * 10)
        try:
            if impl in COPY:
                impl(src, w)
            else:
                impl(w, b"data")
        except OSError as exc:
            results.append(exc.errno)
        writer.join()
        os.close(src)
        os.close(w)
    assert results == [errno.EPIPE] * 4


@pytest.mark.parametrize("read_some", READ)
def test_read_some_eof_and_eagain(read_some) -> None:
    r, w = os.pipe()
    os.write(w, b"hello")
    assert read_some(r, 3) == b"hel"
    assert read_some(r, 100) == b"lo"
    fcntl.fcntl(r, fcntl.F_SETFL, os.O_NONBLOCK)
    with pytest.raises(BlockingIOError):
        read_some(r, 10)
    os.close(w)
    assert read_some(r, 10) == b""
    os.close(r)


@pytest.mark.parametrize("drain_into", DRAIN)
def test_drain_into_appends(drain_into) -> None:
    r, w = os.pipe()
    os.write(w, b"abcdef")
    buf = bytearray(b">")
    assert drain_into(r, buf, 4) == 4
    assert drain_into(r, buf, 100) == 2
    os.close(w)
    assert drain_into(r, buf, 100) == 0
    assert buf == b">abcdef"
    os.close(r)


@pytest.mark.parametrize("impl", [*READ, *DRAIN])
def test_negative_lengths_rejected(impl) -> None:
    with pytest.raises(ValueError):
        impl(0, -1) if impl in READ else impl(0, bytearray(), -1)


@pytest.mark.parametrize("copy_fd", COPY)
def test_bad_bufsize_rejected(copy_fd) -> None:
    with pytest.raises(ValueError):
        copy_fd(0, 1, -1, 0)
