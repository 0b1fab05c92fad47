"""Fakes for unit tests of the agent's container table: a recording runc, a bare init.

`FakeRunc` records each call as (verb, container id) and can be told to fail
a verb (`fail`) or to block in it until released (`gates`). `fake_init()` is
a GuestProcess whose exit the test sets (`exit_init`), with no real process
or stdio. `table_with()` builds a ContainerTable holding one such container.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kata_shim import errors
from kata_shim.guest.container import GuestContainer
from kata_shim.guest.containers import ContainerTable
from kata_shim.guest.processes import GuestProcess
from kata_shim.guest.sandbox import GuestSandbox

__all__ = ["FakeRunc", "exit_init", "fake_init", "table_with"]


class _NoIO:
    """Stands in for ProcessIO: only `close` is ever called by the table."""

    closed = False

    def close(self) -> None:
        self.closed = True


class FakeRunc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, errors.ShimError] = {}
        self.gates: dict[str, asyncio.Event] = {}

    async def _call(self, verb: str, cid: str) -> None:
        self.calls.append((verb, cid))
        gate = self.gates.get(verb)
        if gate is not None:
            await gate.wait()
        if verb in self.fail:
            raise self.fail[verb]

    async def start(self, cid: str) -> None:
        await self._call("start", cid)

    async def pause(self, cid: str) -> None:
        await self._call("pause", cid)

    async def resume(self, cid: str) -> None:
        await self._call("resume", cid)

    async def update(self, cid: str, resources: Path) -> None:
        await self._call("update", cid)

    async def kill(self, cid: str, signal: int, *, all_processes: bool = False) -> None:
        await self._call("kill", cid)

    async def delete(self, cid: str) -> None:
        await self._call("delete", cid)

    async def exec(self, cid: str, *args: Any) -> None:
        await self._call("exec", cid)


def fake_init(cid: str = "c1") -> GuestProcess:
    exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    return GuestProcess(cid, "", 2**22 + 1, _NoIO(), exited, terminal=False)  # type: ignore[arg-type]


def exit_init(container: GuestContainer, code: int = 0) -> None:
    container.init.exited.set_result(code)


def table_with(state_dir: Path, cid: str = "c1") -> tuple[ContainerTable, GuestContainer, FakeRunc]:
    """A table (fake runc, no reaper) holding one CREATED container `cid`."""
    runc = FakeRunc()
    sandbox = GuestSandbox(state_dir, reaper=None)  # type: ignore[arg-type]
    table = ContainerTable(state_dir, sandbox, runc, reaper=None)  # type: ignore[arg-type]
    bundle = state_dir / "containers" / cid
    bundle.mkdir(parents=True)
    container = GuestContainer(cid, bundle, fake_init(cid), {})
    container.watch_exit()
    table._table[cid] = container
    return table, container, runc
