"""Run a Python script under the QEMU jail with an OwnerGuard answering it, as the backend does."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from kata_shim.sandbox.owners import Owners
from kata_shim.sandbox.qemu.ownerguard import OwnerGuard

JAIL = [sys.executable, "-m", "kata_shim.sandbox.qemu.jail"]


async def run_jailed(
    script: str,
    *args: str,
    owners: Owners | None = None,
    during: Callable[[OwnerGuard, asyncio.subprocess.Process], Awaitable[None]] | None = None,
    socket_dir: Path | None = None,
    jail_options: tuple[str, ...] = (),
) -> tuple[int, str, str, OwnerGuard]:
    """(exit status, stdout, stderr, the guard) of `python -c script args...` in the jail.

    The jail inherits the guard's socket (the QEMU backend), or with `socket_dir` connects
    to a guard socket there (`--guard-socket`, as libvirt's QEMU does)."""
    guard = OwnerGuard("test", None if socket_dir is None else socket_dir / "guard.sock")
    if socket_dir is None:
        jail, fds, env = (
            [*JAIL, *jail_options, "--"],
            [guard.jail_fd()],
            os.environ | guard.jail_env(),
        )
    else:
        jail, fds = [*JAIL, *jail_options, *guard.jail_options(), "--"], []
        env = dict(os.environ)
    if owners is not None:
        guard.allow(owners)
    proc = None
    try:
        proc = await asyncio.create_subprocess_exec(
            *jail,
            sys.executable,
            "-c",
            script,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=fds,
            env=env,
        )
        await guard.attach(60)
        if during is not None:
            await during(guard, proc)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        guard.close()
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode(), guard
