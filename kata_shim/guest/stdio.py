"""Per-process stdio inside the agent: pipes, or a pty master for terminals.

ReadStdout/ReadStderr semantics: one read of up to `n` bytes; b"" means EOF.
Output still buffered when the process exits is delivered first; after the
exit a stream waits at most DRAIN_GRACE for more (a background child may hold
the pipe open forever) and then reports EOF. Reads of one stream are
serialised by a lock. Writes to stdin wait for room (non-blocking fd + event
loop), so a slow process never blocks the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import struct
import termios
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DRAIN_GRACE", "InputStream", "OutputStream", "ProcessIO", "receive_console"]

DRAIN_GRACE = 0.5


def _nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


async def _wait_fd(
    fd: int, *, write: bool, also: asyncio.Future[int] | None, timeout: float | None
) -> None:
    """Until fd is ready (or `also` resolves, or timeout passes)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    add, remove = (
        (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    )
    add(fd, wake)
    try:
        waiters: set[asyncio.Future[object]] = {ready}  # type: ignore[arg-type]
        if also is not None and not also.done():
            waiters.add(also)  # type: ignore[arg-type]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        remove(fd)


class OutputStream:
    """Read end of stdout/stderr (or the pty master), owned by the agent."""

    def __init__(self, fd: int, exited: asyncio.Future[int]) -> None:
        _nonblocking(fd)
        self._fd = fd
        self._exited = exited
        self._exit_time: float | None = None
        self._lock = asyncio.Lock()
        exited.add_done_callback(self._note_exit)

    def _note_exit(self, _future: object) -> None:
        self._exit_time = asyncio.get_running_loop().time()

    async def read(self, n: int) -> bytes:
        async with self._lock:
            return await self._read(max(1, n))

    async def _read(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        while self._fd >= 0:
            try:
                return os.read(self._fd, n)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == errno.EIO:  # pty master after the slave side closed
                    return b""
                raise
            timeout = None
            if self._exit_time is not None:
                timeout = self._exit_time + DRAIN_GRACE - loop.time()
                if timeout <= 0:
                    return b""
            await _wait_fd(self._fd, write=False, also=self._exited, timeout=timeout)
        return b""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class InputStream:
    """Write end of a process's stdin (or a dup of the pty master)."""

    def __init__(self, fd: int, *, tty: bool = False) -> None:
        _nonblocking(fd)
        self._fd = fd
        self._tty = tty
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    async def write(self, data: bytes) -> int:
        async with self._lock:
            view = memoryview(data)
            while view:
                if self._fd < 0:
                    raise OSError(errno.EPIPE, "stdin is closed")
                try:
                    view = view[os.write(self._fd, view) :]
                except BlockingIOError:
                    await _wait_fd(self._fd, write=True, also=None, timeout=None)
            return len(data)

    async def close(self) -> None:
        """End of input: close the pipe, or send EOF (^D) through a terminal."""
        async with self._lock:
            if self._fd < 0:
                return
            if self._tty:
                with contextlib.suppress(OSError):
                    os.write(self._fd, b"\x04")
            os.close(self._fd)
            self._fd = -1


@dataclass
class ProcessIO:
    """A process's streams as the agent holds them."""

    stdin: InputStream | None
    stdout: OutputStream
    stderr: OutputStream | None
    tty_master: int | None = None
    _child_fds: list[int] = field(default_factory=list)

    @classmethod
    def pipes(cls, exited: asyncio.Future[int]) -> tuple[ProcessIO, dict[int, int]]:
        """Three fresh pipes; returns the agent side and the child's fds {0, 1, 2}."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        io = cls(InputStream(in_w), OutputStream(out_r, exited), OutputStream(err_r, exited))
        io._child_fds = [in_r, out_w, err_w]
        return io, {0: in_r, 1: out_w, 2: err_w}

    @classmethod
    def terminal(cls, master: int, exited: asyncio.Future[int]) -> ProcessIO:
        return cls(
            InputStream(os.dup(master), tty=True),
            OutputStream(master, exited),
            None,
            tty_master=master,
        )

    def release_child_fds(self) -> None:
        """Close our copies of the child's ends once the child holds them."""
        for fd in self._child_fds:
            os.close(fd)
        self._child_fds = []

    def resize(self, rows: int, columns: int) -> None:
        if self.tty_master is None:
            raise OSError(errno.ENOTTY, "process has no terminal")
        fcntl.ioctl(self.tty_master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    async def close(self) -> None:
        self.release_child_fds()
        if self.stdin is not None:
            await self.stdin.close()
        self.stdout.close()
        if self.stderr is not None:
            self.stderr.close()


async def receive_console(
    path: Path, timeout: float = 30.0
) -> tuple[socket.socket, asyncio.Task[int]]:
    """Listen on `path` for runc's console socket; the task yields the pty master fd."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept() -> int:
        conn, _ = await asyncio.wait_for(loop.sock_accept(listener), timeout)
        with conn:
            conn.setblocking(True)
            conn.settimeout(timeout)
            _, fds, _, _ = await loop.run_in_executor(None, socket.recv_fds, conn, 4096, 1)
        if not fds:
            raise OSError(errno.EPROTO, "runc sent no console fd")
        return fds[0]

    return listener, asyncio.ensure_future(accept())
