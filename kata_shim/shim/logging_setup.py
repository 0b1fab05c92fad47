"""The daemon's logging: the bundle's `log` file, journald, or stderr.

Destinations: `<bundle>/log` when it can be opened, plus journald
(SYSLOG_IDENTIFIER=kata, see journal.py) when a journal socket exists;
stderr only when neither is usable. Debug level when `-debug` was passed or
$KATA_SHIM_DEBUG is set (the systemd debug drop-ins set it for containerd /
iSulad, whose shims inherit their environment); `enable_debug` in the
configuration raises it later, when Create loads the file (runtime.py).

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
import sys
import time
from collections.abc import Mapping

from kata_shim.shim.journal import JournalHandler, journal_socket

__all__ = ["DEBUG_ENV", "LogFileHandler", "debug_requested", "setup_logging"]

DEBUG_ENV = "KATA_SHIM_DEBUG"
_TRUE = ("1", "true", "yes", "on")

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


def debug_requested(flag: bool, env: Mapping[str, str] | None = None) -> bool:
    """-debug, or $KATA_SHIM_DEBUG set to 1/true/yes/on."""
    value = (os.environ if env is None else env).get(DEBUG_ENV, "")
    return flag or value.strip().lower() in _TRUE


def _bundle_handler(bundle: str) -> logging.Handler | None:
    try:
        handler = LogFileHandler(os.path.join(bundle, "log"))
    except OSError:
        return None
    with contextlib.suppress(OSError):  # else fd 2 stays where it was
        _redirect_stderr(handler.path)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    return handler


def _journal_handler(namespace: str, task_id: str) -> logging.Handler | None:
    path = journal_socket()
    if path is None:
        return None
    try:
        handler = JournalHandler(path, {"KATA_NAMESPACE": namespace, "KATA_ID": task_id})
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return handler


def setup_logging(bundle: str, namespace: str, task_id: str, debug: bool) -> str | None:
    """Route the root logger to `<bundle>/log` and journald (else stderr).

    Returns the bundle log's path, None when it could not be opened.
    """
    logging.raiseExceptions = False  # a logging failure must never reach stderr or stdout
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug_requested(debug) else logging.INFO)
    bundle_log = _bundle_handler(bundle)
    handlers = [h for h in (bundle_log, _journal_handler(namespace, task_id)) if h is not None]
    if not handlers:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        handlers.append(stderr)
    for handler in handlers:
        handler.addFilter(_IdFilter(namespace, task_id))
        root.addHandler(handler)
    return bundle_log.path if isinstance(bundle_log, LogFileHandler) else None
