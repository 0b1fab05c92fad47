"""ExitFifos: iSulad's per-container exit fifo gets the init's status once, as a C int."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pytest

from kata_shim.task.exitfifo import ExitFifos


def _fifo(root: Path, cid: str) -> int:
    (root / cid).mkdir()
    os.mkfifo(root / cid / "exit_fifo")
    return os.open(root / cid / "exit_fifo", os.O_RDONLY | os.O_NONBLOCK)


def test_the_status_is_written_once_as_a_native_int(tmp_path: Path) -> None:
    reader = _fifo(tmp_path, "c1")
    try:
        fifos = ExitFifos(tmp_path)
        fifos.open("c1")
        fifos.write("c1", 137)
        assert os.read(reader, 16) == struct.pack("=i", 137)
        fifos.close("c1")  # already closed by the write: a no-op
        assert os.read(reader, 16) == b""  # the writer is gone: EOF
    finally:
        os.close(reader)


def test_a_fifo_without_a_reader_at_start_is_retried_at_the_exit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "c1").mkdir()
    os.mkfifo(tmp_path / "c1" / "exit_fifo")
    fifos = ExitFifos(tmp_path)
    with caplog.at_level(logging.WARNING):
        fifos.open("c1")  # no reader yet: ENXIO, a warning
    assert "exit fifo" in caplog.text
    reader = os.open(tmp_path / "c1" / "exit_fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        fifos.write("c1", 3)
        assert os.read(reader, 16) == struct.pack("=i", 3)
    finally:
        os.close(reader)


def test_release_closes_an_unwritten_fifo(tmp_path: Path) -> None:
    reader = _fifo(tmp_path, "c1")
    try:
        fifos = ExitFifos(tmp_path)
        fifos.open("c1")
        fifos.close("c1")
        fifos.close("c1")
        assert os.read(reader, 16) == b""
    finally:
        os.close(reader)


def test_without_a_directory_nothing_happens(tmp_path: Path) -> None:
    fifos = ExitFifos()
    fifos.open("c1")
    fifos.write("c1", 1)
    fifos.close("c1")
    assert list(tmp_path.iterdir()) == []
