"""Per-process stdio: read/EOF, the drain grace after an exit, stdin, ptys, console fds."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct
import termios
from pathlib import Path

import pytest

from kata_shim.guest.stdio import DRAIN_GRACE, ConsoleSocket, InputStream, OutputStream, ProcessIO

pytestmark = [pytest.mark.timeout(20)]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_read_returns_one_read_then_eof_when_the_writer_closes() -> None:
    async def main() -> None:
        r, w = os.pipe()
        stream = OutputStream(r, asyncio.get_running_loop().create_future())
        pending = asyncio.ensure_future(stream.read(100))
        await asyncio.sleep(0.05)
        assert not pending.done()  # blocks until there is data
        os.write(w, b"hello")
        assert await pending == b"hello"
        os.write(w, b"0123456789")
        assert await stream.read(4) == b"0123"  # at most n bytes
        assert await stream.read(100) == b"456789"
        os.close(w)
        assert await stream.read(100) == b""
        stream.close()

    asyncio.run(main())


def test_after_the_exit_buffered_output_comes_first_then_eof_within_the_grace() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        r, w = os.pipe()  # `w` stays open: a background child still holds the pipe
        stream = OutputStream(r, exited)
        pending = asyncio.ensure_future(stream.read(100))
        await asyncio.sleep(0.05)
        os.write(w, b"last words")
        exited.set_result(0)
        assert await pending == b"last words"
        started = loop.time()
        assert await stream.read(100) == b""
        assert DRAIN_GRACE - 0.1 <= loop.time() - started <= DRAIN_GRACE + 0.3
        stream.close()
        os.close(w)

    asyncio.run(main())


def test_close_wakes_a_pending_read_and_leaks_nothing() -> None:
    async def main() -> None:
        before = open_fds()
        r, w = os.pipe()
        stream = OutputStream(r, asyncio.get_running_loop().create_future())
        pending = asyncio.ensure_future(stream.read(100))
        await asyncio.sleep(0.05)
        stream.close()
        assert await asyncio.wait_for(pending, 1) == b""
        assert await stream.read(10) == b""
        os.close(w)
        assert open_fds() == before

    asyncio.run(main())


def test_stdin_writes_wait_for_room_and_close_gives_eof() -> None:
    async def main() -> None:
        r, w = os.pipe()
        stdin, reader = InputStream(w), OutputStream(r, asyncio.get_running_loop().create_future())
        payload = os.urandom(1 << 20)  # far more than a pipe buffer

        async def drain() -> bytes:
            out = bytearray()
            while chunk := await reader.read(65536):
                out += chunk
            return bytes(out)

        received = asyncio.ensure_future(drain())
        assert await stdin.write(payload) == len(payload)
        stdin.close()
        assert stdin.closed
        assert await received == payload
        with pytest.raises(OSError) as info:
            await stdin.write(b"more")
        assert info.value.errno == errno.EPIPE
        reader.close()

    asyncio.run(main())


def test_close_fails_a_write_blocked_on_a_full_pipe() -> None:
    async def main() -> None:
        r, w = os.pipe()
        stdin = InputStream(w)
        blocked = asyncio.ensure_future(stdin.write(bytes(1 << 20)))  # nobody reads
        await asyncio.sleep(0.1)
        assert not blocked.done()
        stdin.close()
        with pytest.raises(OSError) as info:
            await asyncio.wait_for(blocked, 1)
        assert info.value.errno == errno.EPIPE
        os.close(r)

    asyncio.run(main())


def test_terminal_resize_and_eof_character() -> None:
    async def main() -> None:
        master, slave = os.openpty()
        io = ProcessIO.terminal(master, asyncio.get_running_loop().create_future())
        assert io.stderr is None and io.stdin is not None
        io.resize(40, 132)
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, bytes(8)))
        assert (rows, cols) == (40, 132)
        await io.stdin.write(b"typed\n")
        assert os.read(slave, 100) == b"typed\n"
        io.stdin.close()  # a canonical-mode terminal sees EOF: read() returns 0 bytes
        assert os.read(slave, 100) == b""
        io.close()
        os.close(slave)
        with pytest.raises(OSError):
            io.resize(1, 1)

    asyncio.run(main())


def test_console_socket_receives_the_master_fd(tmp_path: Path) -> None:
    async def main() -> None:
        console = ConsoleSocket(tmp_path / "c.sock")
        master, slave = os.openpty()
        with socket.socket(socket.AF_UNIX) as runc:  # what runc does during create/exec
            runc.connect(str(tmp_path / "c.sock"))
            socket.send_fds(runc, [b"/dev/ptmx"], [master])
        received = await console.receive(timeout=2)
        console.close()
        assert not (tmp_path / "c.sock").exists()
        assert os.fstat(received).st_rdev == os.fstat(master).st_rdev
        for fd in (received, master, slave):
            os.close(fd)

    asyncio.run(main())


def test_console_socket_times_out_without_runc(tmp_path: Path) -> None:
    async def main() -> None:
        console = ConsoleSocket(tmp_path / "c.sock")
        with pytest.raises(TimeoutError):
            await console.receive(timeout=0.1)
        console.close()

    asyncio.run(main())
