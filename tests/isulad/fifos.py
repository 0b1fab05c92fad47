"""iSulad's FIFOs: stdio readers (its IO copy threads) and the exit FIFO supervisor.

* `OutputFifo`: mkfifo, open O_RDONLY|O_NONBLOCK before the shim opens the
  write end (as iSulad's `console_fifo_open`), a thread collecting bytes until
  the writer closes (POLLHUP with nothing left).
* `ExitFifo`: `container_exit_fifo_create` (mknod FIFO 0600 `exit_fifo`) plus the
  supervisor's read: exactly `sizeof(int)` bytes, native-endian; a short read
  means 137 (supervisor.c `supervisor_exit_cb`). Bytes beyond the first int
  (the shim's own EXIT_FIFO_DIR write and the Wait thread's, when both write)
  are kept in `extra` so tests can see who wrote what.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import threading
from pathlib import Path

__all__ = ["EXIT_INT", "ExitFifo", "OutputFifo", "write_exit_fifo"]

EXIT_INT = struct.Struct("=i")  # a C int, native byte order
SHORT_READ_STATUS = 137


class OutputFifo:
    """One stdout/stderr FIFO and the thread draining it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path, 0o600)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.data = bytearray()
        self.eof = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLHUP)
        while not self.eof.is_set():
            events = poller.poll(200)
            if not events:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                break
            if chunk:
                self.data += chunk
            elif events[0][1] & select.POLLHUP:
                break
        self.eof.set()

    def text(self, timeout: float = 10.0) -> str:
        """Everything written, after the writer closed (bounded)."""
        self.eof.wait(timeout)
        return self.data.decode(errors="replace")

    def close(self) -> None:
        self.eof.set()
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class ExitFifo:
    """The container's `exit_fifo` and the supervisor reading it once."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "exit_fifo"
        if not self.path.exists():
            os.mkfifo(self.path, 0o600)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.status: int | None = None
        self.extra = b""
        self.done = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self._stop:
            if not poller.poll(200):
                continue
            try:
                data = os.read(self.fd, EXIT_INT.size)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not data:  # a writer came and went without writing: keep waiting
                continue
            self.status = (
                EXIT_INT.unpack(data)[0] if len(data) == EXIT_INT.size else SHORT_READ_STATUS
            )
            break
        self.done.set()

    def wait(self, timeout: float) -> int | None:
        self.done.wait(timeout)
        return self.status

    def drain_extra(self, settle: float = 0.5) -> bytes:
        """Whatever else was written after the first int (read after `settle` seconds)."""
        self.done.wait(settle)
        select.select([], [], [], settle)
        with contextlib.suppress(BlockingIOError, OSError):
            self.extra += os.read(self.fd, 64)
        return self.extra

    def close(self) -> None:
        self._stop = True
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def write_exit_fifo(path: Path, status: int) -> bool:
    """ShimV2onitor after Wait returned: open O_WRONLY|O_NONBLOCK, write a C int."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, EXIT_INT.pack(status))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
