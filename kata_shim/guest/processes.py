"""One container process in the agent (init or exec) and how runc launches it.

Owns the process's stdio (pipes, or the pty master runc sends over the
console socket) and its exit future, fed by the reaper once the pid is known
from runc's pid file (an exit before that is stashed by the reaper, not lost).
The first `wait()` (WaitProcess) releases it: stdio closed, no more stream
calls. A failed launch closes everything it opened.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kata_shim.errors import NotFound
from kata_shim.guest.reaper import Reaper
from kata_shim.guest.stdio import ConsoleSocket, InputStream, OutputStream, ProcessIO
from kata_shim.logids import IdLogger, id_logger

__all__ = ["GuestProcess", "Starter", "launch", "write_json"]

log = logging.getLogger(__name__)

# runc create / runc exec, given the child's stdio fds or a console socket path
Starter = Callable[[Mapping[int, int], Path | None], Awaitable[None]]


@dataclass
class GuestProcess:
    """An init or exec process of one container, as the agent runs it."""

    container_id: str
    exec_id: str  # "" for the init process
    pid: int
    io: ProcessIO
    exited: asyncio.Future[int]  # the exit code; resolves once the reaper saw it
    terminal: bool
    released: bool = False  # WaitProcess returned: stdio closed, no more stream calls
    log: IdLogger = field(init=False)

    def __post_init__(self) -> None:
        self.log = id_logger(log, self.container_id, self.exec_id)

    @property
    def name(self) -> str:
        return f"{self.exec_id or 'init'} of container {self.container_id}"

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def _live(self) -> ProcessIO:
        if self.released:
            raise NotFound(f"process {self.name} was already waited for")
        return self.io

    def output(self, stderr: bool) -> OutputStream | None:
        io = self._live()
        return io.stderr if stderr else io.stdout

    def stdin(self) -> InputStream | None:
        return self._live().stdin

    def resize(self, rows: int, columns: int) -> None:
        self._live().resize(rows, columns)

    async def wait(self) -> int:
        """The exit code; the first return releases the process."""
        code = await asyncio.shield(self.exited)
        if not self.released:
            self.released = True
            self.io.close()
            self.log.debug("released (exit %d)", code)
        return code

    def close(self) -> None:
        self.released = True
        self.io.close()


def _chain_exit(reaper: Reaper, pid: int, target: asyncio.Future[int]) -> None:
    def forward(source: asyncio.Future[int]) -> None:
        if not target.done():
            target.set_result(source.result())

    reaper.exited(pid).add_done_callback(forward)


async def launch(
    reaper: Reaper,
    ids: tuple[str, str],
    pid_file: Path,
    console_path: Path | None,
    start: Starter,
) -> GuestProcess:
    """Run `start` (runc create / runc exec -d) and wrap the process it started.

    `ids` is (container id, exec id); `console_path` is given for a terminal.
    """
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()
    if console_path is not None:
        io = await _launch_terminal(console_path, exited, start)
    else:
        io, child_fds = ProcessIO.pipes(exited)
        try:
            await start(child_fds, None)
        except BaseException:
            io.close()
            raise
        io.release_child_fds()
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        io.close()
        raise
    _chain_exit(reaper, pid, exited)
    return GuestProcess(ids[0], ids[1], pid, io, exited, console_path is not None)


async def _launch_terminal(path: Path, exited: asyncio.Future[int], start: Starter) -> ProcessIO:
    console = ConsoleSocket(path)
    try:
        await start({}, path)
        master = await console.receive()
    finally:
        console.close()
    return ProcessIO.terminal(master, exited)


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path
