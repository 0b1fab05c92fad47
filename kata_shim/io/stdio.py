"""Host side of a process's stdio: open what the client gave us, write to it without blocking.

Stdio locations come from containerd/iSulad as fifo paths, `file://` URIs
(append to a file) or `binary://` URIs (a logging binary reads fds 3 and 4;
fd 5 is a pipe it closes or writes to when ready; env CONTAINER_ID and
CONTAINER_NAMESPACE only — containerd's convention). Rules: opening never
blocks (stdin fifo O_RDONLY|O_NONBLOCK; stdout/stderr fifos O_RDWR, so there is
always a reader and no EPIPE); `Sink.write` never blocks the loop and gives up
(discard mode, one warning) when its reader makes no progress for
`stall_timeout` or when aborted. Closing a FIFO sink (`Sink.close`) first waits,
bounded, until a client reader took what is still buffered in it: the client
may open its end late (containerd opens it in a goroutine, unsynchronised with
Start), and the kernel frees a FIFO's bytes with its last open file — so the
exit, reported after this close, is never ahead of the output. The pumps that
move data live in io/pumps.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import select
import stat
import struct
import termios
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kata_shim.errors import InvalidArgument
from kata_shim.io.copy import grow_pipe

__all__ = ["BinaryLogger", "HostStdio", "Sink", "open_host_stdio", "wait_event", "wake"]

log = logging.getLogger(__name__)

DEFAULT_STALL_TIMEOUT = 30.0
LOGGER_READY_TIMEOUT = 10.0
READER_GRACE = 5.0  # buffered output waits this long (at most) for a reader that never opened
_SETTLE_POLL = (0.001, 0.05)  # first and longest pause between checks of a settling FIFO


def wake(future: asyncio.Future[None]) -> None:
    """Resolve `future` unless already done (fd readiness callbacks)."""
    if not future.done():
        future.set_result(None)


async def wait_event(event: asyncio.Event) -> None:
    """`event.wait()` as a None-returning coroutine (to mix with fd futures in asyncio.wait)."""
    await event.wait()


class Sink:
    """A non-blocking writer to one host fd (fifo, file or logger pipe), shareable."""

    def __init__(self, fd: int, name: str, stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> None:
        os.set_blocking(fd, False)
        self.fd = fd  # owned; closed by the last `release`
        self.name = name
        self.stall_timeout = stall_timeout
        self.discarding = False  # set once: output from now on is dropped
        self.fifo = stat.S_ISFIFO(os.fstat(fd).st_mode)
        self._users = 1
        self._aborted = asyncio.Event()

    def share(self) -> Sink:
        """Another stream writes here too (stdout and stderr to one file)."""
        self._users += 1
        return self

    async def write(self, data: bytes | memoryview) -> None:
        """Write all of `data`, or drop it once in discard mode."""
        view = memoryview(data)
        while view and not self.discarding and self.fd >= 0:
            try:
                view = view[os.write(self.fd, view) :]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                self._discard(f"write failed: {exc}")
                return
            if not await self._writable():
                self._discard(f"no reader progress for {self.stall_timeout:g}s")

    async def _writable(self) -> bool:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(self.fd, lambda: wake(ready))
        aborted = loop.create_task(wait_event(self._aborted))
        try:
            done, _ = await asyncio.wait(
                {ready, aborted}, timeout=self.stall_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            loop.remove_writer(self.fd)
            aborted.cancel()
        return ready in done

    def _discard(self, why: str) -> None:
        if not self.discarding:
            log.warning("%s: %s; discarding further output", self.name, why)
            self.discarding = True

    def abort(self) -> None:
        """Destructive teardown: stop waiting for the reader, drop what is left."""
        self._discard("aborted (process killed or deleted)")
        self._aborted.set()

    async def close(self) -> None:
        """`release`; the last user first lets a FIFO's client take what is buffered."""
        if self._users == 1 and self.fd >= 0 and self.fifo and not self.discarding:
            await self._settle()
        self.release()

    async def _settle(self) -> None:
        """Keep the FIFO open until a client reader emptied it (bounded, see `_settle_limit`).

        We hold the FIFO O_RDWR, i.e. we are a reader too: swap that fd for a write-only
        one on the same FIFO, so the readers left are the client's and the kernel keeps the
        bytes (we are still a writer) until a reader takes them or we give up.
        """
        if _buffered(self.fd) == 0:
            return
        try:
            writer = os.open(f"/proc/self/fd/{self.fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:  # no /proc: close as it is
            log.warning("%s: cannot wait for a reader of the last output: %s", self.name, exc)
            return
        os.close(self.fd)
        self.fd = writer
        loop = asyncio.get_running_loop()
        left, since, pause = _buffered(writer), loop.time(), _SETTLE_POLL[0]
        while left and not self._aborted.is_set():
            if loop.time() - since >= self._settle_limit(writer):
                log.warning("%s: %d byte(s) of output nobody read; closing", self.name, left)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._aborted.wait(), pause)
            pause = min(pause * 2, _SETTLE_POLL[1])
            now = _buffered(writer)
            if now < left:  # a reader made progress
                left, since = now, loop.time()
            left = now

    def _settle_limit(self, writer: int) -> float:
        """A reader that is there gets `stall_timeout`; none yet (a late open), READER_GRACE."""
        return self.stall_timeout if _has_reader(writer) else min(self.stall_timeout, READER_GRACE)

    def release(self) -> None:
        """One user is done; the fd closes (reader sees EOF) when all are."""
        self._users -= 1
        if self._users <= 0 and self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _buffered(fd: int) -> int:
    """Bytes waiting in the pipe/FIFO behind fd (FIONREAD)."""
    try:
        count: int = struct.unpack("=i", fcntl.ioctl(fd, termios.FIONREAD, bytes(4)))[0]
    except OSError:
        return 0
    return count


def _has_reader(write_fd: int) -> bool:
    """A write-only FIFO fd reports POLLERR while no reader has the FIFO open."""
    poller = select.poll()
    poller.register(write_fd, select.POLLOUT)
    return not any(events & select.POLLERR for _, events in poller.poll(0))


@dataclass
class BinaryLogger:
    """A running logging binary (binary:// URI) and our ends of its pipes."""

    pid: int
    pidfd: int

    async def stop(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for it to exit after its pipes closed, then kill it."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.pidfd, lambda: wake(exited))
        try:
            await asyncio.wait_for(exited, timeout)
        except TimeoutError:
            log.warning("logging binary %d did not exit in %gs; killing it", self.pid, timeout)
            with contextlib.suppress(OSError):
                os.kill(self.pid, 9)
        finally:
            loop.remove_reader(self.pidfd)
        with contextlib.suppress(ChildProcessError):  # a subreaper may have reaped it
            os.waitpid(self.pid, 0)
        os.close(self.pidfd)


@dataclass
class HostStdio:
    """The opened host ends for one process."""

    stdin_fd: int | None = None  # owned by the stdin pump, which closes it
    stdout: Sink | None = None
    stderr: Sink | None = None
    logger: BinaryLogger | None = None

    async def close(self) -> None:
        """Close everything (clients see EOF); stop the logging binary."""
        if self.stdin_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.stdin_fd)
            self.stdin_fd = None
        for sink in (self.stdout, self.stderr):
            if sink is not None:
                await sink.close()
        self.stdout = self.stderr = None
        if self.logger is not None:
            logger, self.logger = self.logger, None
            await logger.stop()


def _scheme(location: str) -> tuple[str, str]:
    if "://" not in location:
        return "fifo", location
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme not in ("file", "binary", "fifo"):
        raise InvalidArgument(f"unsupported stdio URI scheme {parsed.scheme!r} in {location!r}")
    return parsed.scheme, urllib.parse.unquote(parsed.path)


def _open_output(location: str) -> int:
    kind, path = _scheme(location)
    if kind == "file":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    grow_pipe(fd)  # a FIFO: room for a whole agent reply, so one write rarely waits
    return fd


def _logger_argv(uri: str) -> list[str]:
    parsed = urllib.parse.urlsplit(uri)
    argv = [urllib.parse.unquote(parsed.path)]
    for key, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        argv += [key, value]
    return argv


async def _spawn_logger(
    uri: str, container_id: str, namespace: str, stall_timeout: float
) -> tuple[BinaryLogger, Sink, Sink]:
    argv = _logger_argv(uri)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ready_r, ready_w = os.pipe()
    # posix_spawn dup2s onto 3, 4, 5: move the sources out of that range first
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (out_r, err_r, ready_w)]
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, n, os.devnull, os.O_RDWR, 0) for n in (0, 1, 2)
    ]
    actions += [(os.POSIX_SPAWN_DUP2, fd, n) for fd, n in zip(high, (3, 4, 5), strict=True)]
    env = {"CONTAINER_ID": container_id, "CONTAINER_NAMESPACE": namespace}
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    except OSError as exc:
        for fd in (out_w, err_w, ready_r):
            os.close(fd)
        raise InvalidArgument(f"cannot start logging binary {argv[0]}: {exc}") from exc
    finally:
        for fd in (out_r, err_r, ready_w, *high):
            os.close(fd)
    logger = BinaryLogger(pid, os.pidfd_open(pid))
    await _wait_logger_ready(ready_r, argv[0])
    name = f"logging binary {argv[0]}"
    return logger, Sink(out_w, name, stall_timeout), Sink(err_w, name, stall_timeout)


async def _wait_logger_ready(ready_r: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(ready_r, lambda: wake(ready))
    try:
        await asyncio.wait_for(ready, LOGGER_READY_TIMEOUT)
    except TimeoutError:
        log.warning("logging binary %s not ready after %gs", name, LOGGER_READY_TIMEOUT)
    finally:
        loop.remove_reader(ready_r)
        os.close(ready_r)


async def open_host_stdio(
    stdin: str,
    stdout: str,
    stderr: str,
    *,
    terminal: bool,
    container_id: str,
    namespace: str,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> HostStdio:
    """Open the client's stdio; empty locations stay None. Never blocks on a fifo."""
    host = HostStdio()
    try:
        if stdin:
            host.stdin_fd = _open_stdin(stdin)
        if stdout and _scheme(stdout)[0] == "binary":
            host.logger, host.stdout, err = await _spawn_logger(
                stdout, container_id, namespace, stall_timeout
            )
            host.stderr = None if terminal else err
            if terminal:
                err.release()
        else:
            _open_outputs(host, stdout, "" if terminal else stderr, stall_timeout)
    except OSError as exc:
        await host.close()
        code = "no such fifo" if exc.errno == errno.ENOENT else str(exc)
        raise InvalidArgument(f"cannot open stdio of {container_id}: {code}") from exc
    except BaseException:
        await host.close()
        raise
    return host


def _open_stdin(stdin: str) -> int:
    kind, path = _scheme(stdin)
    if kind != "fifo":
        raise InvalidArgument(f"stdin must be a fifo, not {stdin!r}")
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def _open_outputs(host: HostStdio, stdout: str, stderr: str, stall_timeout: float) -> None:
    """stdout and stderr as Sinks (one shared Sink when both name the same place)."""
    if stdout:
        host.stdout = Sink(_open_output(stdout), f"stdout {stdout}", stall_timeout)
    if stderr:
        if stderr == stdout and host.stdout is not None:
            host.stderr = host.stdout.share()
        else:
            host.stderr = Sink(_open_output(stderr), f"stderr {stderr}", stall_timeout)
