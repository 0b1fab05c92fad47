"""Start helper processes (runc) without ever waiting on them directly.

posix_spawn with explicit fd wiring (everything else is close-on-exec by
Python's default), exit codes through the Reaper. `run` captures stdout for
commands that print data (runc events/state) and enforces a timeout by
killing the process it started.
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

__all__ = ["run", "spawn"]


def spawn(argv: Sequence[str], fds: Mapping[int, int], env: Mapping[str, str] | None = None) -> int:
    """Start argv with child fd N = fds[N] (N in 0, 1, 2, ...); return the pid."""
    path = shutil.which(argv[0]) or argv[0]
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fds.get(n, null), n) for n in range(3)]
        actions += [(os.POSIX_SPAWN_DUP2, src, n) for n, src in fds.items() if n > 2]
        return os.posix_spawn(path, list(argv), dict(env or os.environ), file_actions=actions)
    finally:
        os.close(null)


async def _read_all(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []

    def reader() -> None:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)

    await loop.run_in_executor(None, reader)
    return b"".join(chunks)


async def run(
    reaper: Reaper,
    argv: Sequence[str],
    *,
    fds: Mapping[int, int] | None = None,
    timeout: float = 60.0,
    capture: bool = False,
) -> tuple[int, bytes]:
    """Run argv to completion; return (exit code, stdout if captured)."""
    wiring = dict(fds or {})
    out_r = out_w = -1
    if capture:
        out_r, out_w = os.pipe()
        wiring[1] = out_w
    try:
        pid = spawn(argv, wiring)
        exited = reaper.exited(pid)
    finally:
        if out_w >= 0:
            os.close(out_w)
    try:
        output = await _read_all(out_r) if capture else b""
        code = await asyncio.wait_for(asyncio.shield(exited), timeout)
    except TimeoutError as exc:
        _kill(pid)
        raise DeadlineExceeded(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} timed out") from exc
    finally:
        if out_r >= 0:
            os.close(out_r)
    return code, output


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
