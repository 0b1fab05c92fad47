"""iSulad's exit fifos: the init's exit status for `<EXIT_FIFO_DIR>/<container id>/exit_fifo`.

iSulad sets EXIT_FIFO_DIR for the shim and reads each container's fifo
(docs/isulad.md). Rules: the fifo is opened without blocking at Start of the
init (no reader yet is a warning, and the open is retried at the exit); the
status is written once, as a native-endian C int, in the same step that queues
TaskExit, and the fifo is then closed; releasing the container closes one that
is still open. With no directory every call is a no-op. Event loop only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from pathlib import Path

__all__ = ["ExitFifos"]

log = logging.getLogger(__name__)

_EXIT_INT = struct.Struct("=i")  # iSulad reads a native-endian C int


class ExitFifos:
    """The open exit fifos of one shim, by container id."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._fds: dict[str, int] = {}

    def open(self, container_id: str) -> None:
        """Open the container's fifo if there is a directory and it is not open yet."""
        if self.directory is None or container_id in self._fds:
            return
        path = self.directory / container_id / "exit_fifo"
        try:
            self._fds[container_id] = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("exit fifo %s: %s", path, exc)

    def write(self, container_id: str, status: int) -> None:
        """Write the init's exit status (once) and close the fifo."""
        if self.directory is None:
            return
        self.open(container_id)  # retry if Start could not open it
        fd = self._fds.pop(container_id, None)
        if fd is None:
            return
        try:
            os.write(fd, _EXIT_INT.pack(status))
        except OSError as exc:
            log.warning("writing exit status of %s to its exit fifo: %s", container_id, exc)
        finally:
            os.close(fd)

    def close(self, container_id: str) -> None:
        """Close the fifo without writing (the container is released). Idempotent."""
        fd = self._fds.pop(container_id, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
