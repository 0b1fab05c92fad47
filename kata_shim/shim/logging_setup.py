"""The daemon's logging: Python logging into the bundle's `log` file.

Under containerd `log` is a FIFO containerd reads (it copies lines into its
own log); under iSulad it is a regular file. Rules: never stdout (fd 1 is
/dev/null); the handler writes non-blocking and drops a line rather than
stall the event loop when the reader is slow; after EPIPE (containerd
restarted: no reader) it re-opens the FIFO, at most once a second, and picks
the new containerd up. fd 2 is pointed at the same file (a separate, blocking
open) so tracebacks and faulthandler dumps (SIGUSR1) land there too.
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import logging
import os
import signal
import stat
import time

__all__ = ["LogFileHandler", "setup_logging"]

FORMAT = (
    "%(asctime)s.%(msecs)03d %(levelname)s kata-shim[%(process)d] "
    "ns=%(shim_namespace)s id=%(shim_id)s %(name)s: %(message)s"
)
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
REOPEN_INTERVAL = 1.0


def _open_log(path: str) -> int:
    """Open the log for writing: non-blocking for a FIFO (ENXIO without a reader), append else."""
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    return fd


class _IdFilter(logging.Filter):
    """Stamps every record with the shim's namespace and task id."""

    def __init__(self, namespace: str, task_id: str) -> None:
        super().__init__()
        self.namespace = namespace
        self.task_id = task_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.shim_namespace = self.namespace
        record.shim_id = self.task_id
        return True


class LogFileHandler(logging.Handler):
    """Writes whole lines to the bundle's log FIFO/file without ever blocking."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.fd: int | None = _open_log(path)
        self.dropped = 0  # lines lost to a full pipe or a missing reader
        self._next_reopen = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode(errors="replace")
        except Exception:
            self.handleError(record)
            return
        if self.fd is None and not self._reopen():
            self.dropped += 1
            return
        self._write(data)

    def _write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                self.dropped += 1
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    self._close_fd()
                self.dropped += 1
                return

    def _reopen(self) -> bool:
        now = time.monotonic()
        if now < self._next_reopen:
            return False
        self._next_reopen = now + REOPEN_INTERVAL
        try:
            self.fd = _open_log(self.path)
        except OSError:
            return False
        return True

    def _close_fd(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        self._close_fd()
        super().close()


def _redirect_stderr(path: str) -> None:
    """fd 2 → the log too (blocking), for tracebacks and faulthandler."""
    fd = _open_log(path)
    os.set_blocking(fd, True)
    os.dup2(fd, 2)
    os.close(fd)
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def setup_logging(bundle: str, namespace: str, task_id: str, debug: bool) -> str | None:
    """Route the root logger to `<bundle>/log`; return its path (None when unusable)."""
    logging.raiseExceptions = False  # a logging failure must never reach stderr or stdout
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    path = os.path.join(bundle, "log")
    handler: logging.Handler
    try:
        handler = LogFileHandler(path)
    except OSError:
        handler, path = logging.NullHandler(), ""
    else:
        with contextlib.suppress(OSError):  # else fd 2 stays /dev/null
            _redirect_stderr(path)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(_IdFilter(namespace, task_id))
    root.addHandler(handler)
    return path or None
