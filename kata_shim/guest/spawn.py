"""Start helper processes (runc, mount) without ever waiting on them directly.

posix_spawn with explicit fd wiring (every other fd of ours is close-on-exec,
Python's default), default dispositions for the signals Python ignores
(SIGPIPE, SIGXFSZ) and an empty signal mask, so children start clean. Exit
codes come from the Reaper. `run` optionally captures output (read on the
event loop, no threads) and bounds the whole run with a timeout, killing the
process it started when the timeout passes or the caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping, Sequence

from kata_shim.errors import DeadlineExceeded
from kata_shim.guest.reaper import Reaper

__all__ = ["run", "spawn", "wake"]

# Python ignores these; an exec'd program must not inherit that.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def spawn(argv: Sequence[str], fds: Mapping[int, int], env: Mapping[str, str] | None = None) -> int:
    """Start argv with child fd N = fds[N] (N in 0, 1, 2, ...; missing 0-2 = /dev/null)."""
    path = shutil.which(argv[0]) or argv[0]
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fds.get(n, null), n) for n in range(3)]
        actions += [(os.POSIX_SPAWN_DUP2, src, n) for n, src in fds.items() if n > 2]
        return os.posix_spawn(
            path,
            list(argv),
            dict(os.environ if env is None else env),
            file_actions=actions,
            setsigdef=_DEFAULT_SIGNALS,
            setsigmask=(),
        )
    finally:
        os.close(null)


def wake(future: asyncio.Future[None]) -> None:
    """Resolve `future` unless already done (for add_reader/add_writer callbacks)."""
    if not future.done():
        future.set_result(None)


async def readable(fd: int) -> None:
    """Until `fd` is readable (or has EOF/an error to report) on the running loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, wake, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _read_all(fd: int) -> bytes:
    """Read a pipe to EOF without blocking the loop."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            await readable(fd)
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _output_pipe(wiring: dict[int, int], capture: bool, stderr: bool) -> tuple[int, int]:
    """A pipe wired as the child's fd 1 (`capture`) and/or 2 (`stderr`); (-1, -1) if neither."""
    if not (capture or stderr):
        return -1, -1
    out_r, out_w = os.pipe()
    if capture:
        wiring[1] = out_w
    if stderr:
        wiring[2] = out_w
    return out_r, out_w


async def run(
    reaper: Reaper,
    argv: Sequence[str],
    *,
    fds: Mapping[int, int] | None = None,
    timeout: float = 60.0,
    capture: bool = False,
    stderr: bool = False,
) -> tuple[int, bytes]:
    """Run argv to completion; return (exit code, captured output).

    `capture` collects stdout; `stderr` also sends stderr to the same pipe.
    """
    wiring = dict(fds or {})
    out_r, out_w = _output_pipe(wiring, capture, stderr)
    try:
        pid = spawn(argv, wiring)
        exited = reaper.exited(pid)
    finally:
        if out_w >= 0:
            os.close(out_w)
    try:
        async with asyncio.timeout(timeout):
            output = await _read_all(out_r) if out_r >= 0 else b""
            code = await asyncio.shield(exited)
    except TimeoutError as exc:
        _kill(pid)
        raise DeadlineExceeded(f"{' '.join(argv[:2])} timed out after {timeout}s") from exc
    except BaseException:  # cancelled: nobody wants the result any more
        _kill(pid)
        raise
    finally:
        if out_r >= 0:
            os.close(out_r)
    return code, output


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
