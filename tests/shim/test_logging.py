"""The daemon's log handler: FIFO (containerd) or file (iSulad), never blocking, reopening."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from kata_shim.shim import logging_setup
from kata_shim.shim.logging_setup import LogFileHandler

pytestmark = pytest.mark.timeout(10)


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("kata_shim.test", logging.INFO, __file__, 1, message, None, None)


def _read_all(fd: int) -> bytes:
    out = b""
    try:
        while chunk := os.read(fd, 65536):
            out += chunk
    except BlockingIOError:
        pass
    return out


def test_fifo_without_reader_cannot_be_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "log")
    with pytest.raises(OSError):  # ENXIO: containerd is not holding it
        LogFileHandler(str(tmp_path / "log"))


def test_regular_file_is_appended(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("earlier\n")
    handler = LogFileHandler(str(log))
    handler.emit(_record("one"))
    handler.close()
    assert log.read_text() == "earlier\none\n"


def test_full_fifo_drops_instead_of_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "log")
    reader = os.open(tmp_path / "log", os.O_RDONLY | os.O_NONBLOCK)
    try:
        handler = LogFileHandler(str(tmp_path / "log"))
        for _ in range(2000):  # ~ 200 KiB into a 64 KiB pipe nobody reads
            handler.emit(_record("x" * 100))
        assert handler.dropped > 0
        handler.close()
    finally:
        os.close(reader)


def test_reopens_after_the_reader_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging_setup, "REOPEN_INTERVAL", 0.0)
    os.mkfifo(tmp_path / "log")
    reader = os.open(tmp_path / "log", os.O_RDONLY | os.O_NONBLOCK)
    handler = LogFileHandler(str(tmp_path / "log"))
    handler.emit(_record("before"))
    assert _read_all(reader) == b"before\n"
    os.close(reader)  # containerd went away
    handler.emit(_record("lost"))  # EPIPE: dropped, fd closed
    handler.emit(_record("lost too"))  # reopen fails (ENXIO): dropped
    assert handler.fd is None and handler.dropped == 2
    reader = os.open(tmp_path / "log", os.O_RDONLY | os.O_NONBLOCK)  # containerd is back
    try:
        handler.emit(_record("after"))
        assert _read_all(reader) == b"after\n"
    finally:
        handler.close()
        os.close(reader)
