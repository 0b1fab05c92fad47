"""GuestContainer: state changes only under its lock; the init's exit recorded once, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kata_shim.guest.container import GuestContainer
from kata_shim.guest.states import ContainerState, Op
from tests.fakes.guest import exit_init, fake_init

S = ContainerState


def run(coro):
    return asyncio.run(coro)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def new_container() -> GuestContainer:
    container = GuestContainer("c1", Path("/nonexistent"), fake_init(), {})
    container.watch_exit()
    return container


def test_apply_outside_the_lock_is_a_bug_not_a_transition() -> None:
    async def main() -> None:
        container = new_container()
        with pytest.raises(RuntimeError, match="outside its lock"):
            container.apply(Op.START)
        assert container.state is S.CREATED
        async with container.lock:
            assert container.apply(Op.START) is S.RUNNING

    run(main())


def test_the_exit_waits_for_the_lock_then_stops_the_container() -> None:
    async def main() -> None:
        container = new_container()
        async with container.lock:
            container.apply(Op.START)
            exit_init(container, 3)
            await settle()
            assert container.state is S.RUNNING  # the exit is not recorded behind the lock
        await settle()
        assert container.state is S.STOPPED

    run(main())


def test_an_op_in_flight_when_the_init_exits_is_applied_first() -> None:
    """A pause that succeeds while the init dies ends STOPPED, never PAUSED."""

    async def main() -> None:
        container = new_container()
        async with container.lock:
            container.apply(Op.START)
        async with container.lock:
            container.check(Op.PAUSE)
            exit_init(container)
            await settle()
            container.apply(Op.PAUSE)
        await settle()
        assert container.state is S.STOPPED

    run(main())


def test_exit_is_recorded_once_and_not_after_delete() -> None:
    async def main() -> None:
        container = new_container()
        async with container.lock:
            container.record_exit()  # the init still runs: nothing to record
            assert container.state is S.CREATED
            exit_init(container)
            container.record_exit()
            container.record_exit()
            assert container.state is S.STOPPED
            container.apply(Op.DELETE)
        await settle()  # the exit task ran after the delete and left it alone
        assert container.state is S.DELETED

    run(main())
