"""ProcessCalls with a fake runc: exec's checks come before runc; signals to dead processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.guest.process_calls import ProcessCalls, upgrade_sigterm
from kata_shim.guest.states import Op
from tests.fakes.guest import exit_init, table_with


def run(coro):
    return asyncio.run(coro)


def test_exec_needs_a_running_container_and_a_new_id(tmp_path: Path) -> None:
    async def main() -> None:
        table, container, runc = table_with(tmp_path)
        calls = ProcessCalls(table)
        with pytest.raises(errors.FailedPrecondition, match="c1 is created, not running"):
            await calls.exec("c1", "e1", {"args": ["true"]})
        with pytest.raises(errors.AlreadyExists):  # the init's own id
            await calls.exec("c1", "c1", {"args": ["true"]})
        with pytest.raises(errors.InvalidArgument):
            await calls.exec("c1", "../e1", {"args": ["true"]})
        await table.change("c1", Op.START)
        await table.change("c1", Op.PAUSE)
        with pytest.raises(errors.FailedPrecondition, match="c1 is paused, not running"):
            await calls.exec("c1", "e1", {"args": ["true"]})
        assert ("exec", "c1") not in runc.calls and container.execs == {}

    run(main())


def test_signal_to_an_exited_process_is_not_found(tmp_path: Path) -> None:
    async def main() -> None:
        table, container, runc = table_with(tmp_path)
        calls = ProcessCalls(table)
        await calls.signal("c1", "", 0)  # probe: alive
        exit_init(container, 0)
        with pytest.raises(errors.NotFound, match="already exited"):
            await calls.signal("c1", "", 9)
        assert await calls.wait("c1", "c1") == 0
        assert ("kill", "c1") not in runc.calls

    run(main())


def test_sigterm_is_not_upgraded_for_a_process_that_is_not_pid_1() -> None:
    assert upgrade_sigterm(os.getpid()) is False
    assert upgrade_sigterm(2**22 + 1) is False  # no such process
