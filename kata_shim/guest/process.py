"""One container process in the agent (init or exec) and how runc launches it.

Owns the process's stdio (pipes, or the pty master received over runc's
console socket) and its exit future, fed by the reaper once the pid is known
from runc's pid file. A failed launch closes everything it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kata_shim.guest.reaper import Reaper
from kata_shim.guest.runc import Runc
from kata_shim.guest.stdio import ProcessIO, receive_console

__all__ = ["Process", "launch"]

log = logging.getLogger(__name__)

Starter = Callable[[Mapping[int, int], Path | None], Awaitable[None]]


@dataclass
class Process:
    container_id: str
    exec_id: str  # "" for the init process
    pid: int
    io: ProcessIO
    exited: asyncio.Future[int]  # the exit code; resolves once the reaper saw it
    terminal: bool

    @property
    def running(self) -> bool:
        return not self.exited.done()


def _chain_exit(reaper: Reaper, pid: int, target: asyncio.Future[int]) -> None:
    def forward(source: asyncio.Future[int]) -> None:
        if not target.done():
            target.set_result(source.result())

    reaper.exited(pid).add_done_callback(forward)


async def launch(
    reaper: Reaper,
    workdir: Path,
    container_id: str,
    exec_id: str,
    terminal: bool,
    start: Starter,
) -> Process:
    """Run `start(stdio_fds, console_socket)` (runc create / runc exec) and wrap the result.

    `workdir` receives the pid file and console socket for this process.
    """
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()
    pid_file = workdir / f"{exec_id or 'init'}.pid"
    if terminal:
        io = await _launch_terminal(workdir, exec_id, exited, start)
    else:
        io, child_fds = ProcessIO.pipes(exited)
        try:
            await start(child_fds, None)
        except BaseException:
            await io.close()
            raise
        io.release_child_fds()
    pid = int(pid_file.read_text().strip())
    _chain_exit(reaper, pid, exited)
    return Process(container_id, exec_id, pid, io, exited, terminal)


async def _launch_terminal(
    workdir: Path, exec_id: str, exited: asyncio.Future[int], start: Starter
) -> ProcessIO:
    socket_path = workdir / f"{exec_id or 'init'}.console"
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    listener, master_task = await receive_console(socket_path)
    try:
        await start({}, socket_path)
        master = await master_task
    except BaseException:
        master_task.cancel()
        raise
    finally:
        listener.close()
        socket_path.unlink(missing_ok=True)
    return ProcessIO.terminal(master, exited)


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def init_starter(runc: Runc, cid: str, bundle: Path, pid_file: Path) -> Starter:
    async def start(stdio: Mapping[int, int], console: Path | None) -> None:
        await runc.create(cid, bundle, pid_file, stdio, console)

    return start


def exec_starter(runc: Runc, cid: str, process_json: Path, pid_file: Path) -> Starter:
    async def start(stdio: Mapping[int, int], console: Path | None) -> None:
        await runc.exec(cid, process_json, pid_file, stdio, console)

    return start
