"""Per-process stdio inside the agent: pipes, or a pty master for terminals.

ReadStdout/ReadStderr semantics: one read of up to `n` bytes; b"" means EOF.
Output still buffered when the process exits is delivered first; after the
exit a stream waits at most DRAIN_GRACE for more (a background child may hold
the pipe open forever) and then reports EOF. Reads of one stream are
serialised by a lock; a close wakes a pending read (→ EOF) or write (→ EPIPE).
Stdin writes wait for room on a non-blocking fd, so a slow process never
blocks the agent. All waiting is add_reader/add_writer on the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct
import termios
from dataclasses import dataclass, field
from pathlib import Path

from kata_shim.guest.spawn import readable, wake
from kata_shim.io.copy import grow_pipe, read_some

__all__ = ["DRAIN_GRACE", "ConsoleSocket", "InputStream", "OutputStream", "ProcessIO"]

DRAIN_GRACE = 0.5


class _Fd:
    """A non-blocking fd plus the one waiter (reader or writer) parked on it."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, *, write: bool, timeout: float | None) -> None:
        """Until the fd is ready, `poke()` is called, or `timeout` passes."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        fd = self.fd
        (loop.add_writer if write else loop.add_reader)(fd, wake, waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiter = None
            if self.fd == fd:  # else close() unregistered it (the number may be reused now)
                (loop.remove_writer if write else loop.remove_reader)(fd)

    def poke(self) -> None:
        if self._waiter is not None:
            wake(self._waiter)

    def close(self) -> None:
        """Close the fd; a parked waiter wakes up and sees `fd == -1`."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        if self._waiter is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(fd)
            loop.remove_writer(fd)
            wake(self._waiter)
        os.close(fd)


class OutputStream:
    """Read end of stdout/stderr (or the pty master), owned by the agent."""

    def __init__(self, fd: int, exited: asyncio.Future[int]) -> None:
        self._fd = _Fd(fd)
        self._exit_time: float | None = None
        self._lock = asyncio.Lock()
        exited.add_done_callback(self._note_exit)

    def _note_exit(self, _future: object) -> None:
        self._exit_time = asyncio.get_running_loop().time()
        self._fd.poke()

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes from one read; b"" at EOF (or DRAIN_GRACE after the exit)."""
        async with self._lock:
            return await self._read(max(1, n))

    async def _read(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        while self._fd.fd >= 0:
            try:
                return read_some(self._fd.fd, n)  # compiled: see kata_shim/_fastio.pyx
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
            await self._fd.wait(write=False, timeout=timeout)
        return b""

    def close(self) -> None:
        self._fd.close()


class InputStream:
    """Write end of a process's stdin (or a dup of the pty master)."""

    def __init__(self, fd: int, *, tty: bool = False) -> None:
        self._fd = _Fd(fd)
        self._tty = tty
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._fd.fd < 0

    async def write(self, data: bytes) -> int:
        """Write all of `data` (waiting for room); EPIPE once closed or the reader is gone."""
        async with self._lock:
            view = memoryview(data)
            while view:
                if self._fd.fd < 0:
                    raise OSError(errno.EPIPE, "stdin is closed")
                try:
                    view = view[os.write(self._fd.fd, view) :]
                except BlockingIOError:
                    await self._fd.wait(write=True, timeout=None)
            return len(data)

    def close(self) -> None:
        """End of input: close the pipe, or send the terminal's EOF character."""
        if self._tty and self._fd.fd >= 0:
            try:
                eof = termios.tcgetattr(self._fd.fd)[6][termios.VEOF]
                os.write(self._fd.fd, eof if isinstance(eof, bytes) else bytes([eof]))
            except OSError:
                pass
        self._fd.close()


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
        for fd in (in_w, out_w, err_w):
            grow_pipe(fd)  # large reads per ReadStdout; the process writes ahead meanwhile
        io = cls(InputStream(in_w), OutputStream(out_r, exited), OutputStream(err_r, exited))
        io._child_fds = [in_r, out_w, err_w]
        return io, {0: in_r, 1: out_w, 2: err_w}

    @classmethod
    def terminal(cls, master: int, exited: asyncio.Future[int]) -> ProcessIO:
        """stdin and stdout both on the pty master (no separate stderr)."""
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

    def close(self) -> None:
        self.release_child_fds()
        if self.stdin is not None:
            self.stdin.close()
        self.stdout.close()
        if self.stderr is not None:
            self.stderr.close()
        self.tty_master = None


class ConsoleSocket:
    """The unix socket runc's --console-socket sends the pty master to (SCM_RIGHTS).

    runc connects, sends one fd and closes during `runc create`/`runc exec`;
    the queued connection and its message wait in the backlog, so the fd is
    received after runc returns.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(str(path))
            self._sock.listen(1)
        except OSError:
            self.close()
            raise
        self._sock.setblocking(False)

    async def receive(self, timeout: float = 5.0) -> int:
        """The pty master fd runc sent."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            conn, _ = await loop.sock_accept(self._sock)
            with conn:
                while True:
                    try:
                        _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                        break
                    except BlockingIOError:
                        await readable(conn.fileno())
        if not fds:
            raise OSError(errno.EPROTO, "runc sent no console fd")
        return fds[0]

    def close(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)
