"""Process: set-once exit, shielded waits, lock-ordered exit publication, ExitOrder."""

from __future__ import annotations

import asyncio
import signal

import pytest

from kata_shim import errors
from kata_shim.process.exits import ExitOrder, finish_exit, normalise_status
from kata_shim.process.process import Process, Stdio
from kata_shim.process.states import Op, ProcessState

pytestmark = [pytest.mark.timeout(10)]


def make(exec_id: str = "") -> Process:
    return Process("c1", exec_id, exec_id or "c1", Stdio())


@pytest.mark.asyncio
async def test_exit_is_recorded_once() -> None:
    process = make()
    process.apply(Op.START)
    first = process.record_exit(3, when_ns=10)
    assert first is not None and (first.status, first.exited_at_ns) == (3, 10)
    assert process.record_exit(4) is None
    assert process.state is ProcessState.STOPPED
    assert process.exit_record == first
    assert (await process.wait()) is first


@pytest.mark.asyncio
async def test_wait_blocks_from_created_and_cancelling_one_waiter_is_harmless() -> None:
    process = make()
    waiters = [asyncio.create_task(process.wait()) for _ in range(3)]
    await asyncio.sleep(0.01)
    waiters[0].cancel()
    process.record_exit(0)
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert [r.status for r in results[1:]] == [0, 0]  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_finish_exit_waits_for_a_start_holding_the_lock() -> None:
    process = make()
    order: list[str] = []

    async def start() -> None:
        async with process.lock:
            await asyncio.sleep(0.05)  # StartContainer in flight; the process already died
            process.apply(Op.START)
            order.append("TaskStart")

    starting = asyncio.create_task(start())
    await asyncio.sleep(0)
    record = await finish_exit(process, 0, lambda p, r: order.append("TaskExit"))
    await starting
    assert record is not None and order == ["TaskStart", "TaskExit"]
    assert await finish_exit(process, 1, lambda p, r: order.append("again")) is None
    assert order == ["TaskStart", "TaskExit"]


@pytest.mark.parametrize(
    ("raw", "delivered", "expected"),
    [
        (0, set(), 0),
        (7, set(), 7),
        (9, set(), 9),  # an application exiting 9 on its own
        (9, {signal.SIGKILL}, 137),  # an old agent's bare signal number
        (15, {signal.SIGTERM}, 143),
        (137, {signal.SIGKILL}, 137),
        (17, {signal.SIGCHLD}, 17),  # SIGCHLD does not terminate
        (-1, set(), 255),
        (256, set(), 255),
        (255, set(), 255),
    ],
)
def test_normalise_status(raw: int, delivered: set[int], expected: int) -> None:
    assert normalise_status(raw, delivered) == expected


@pytest.mark.asyncio
async def test_exit_order_blocks_exec_starts_after_the_init_exit() -> None:
    order = ExitOrder()
    order.begin_exec("a")
    order.begin_exec("b")
    assert order.active == {"a", "b"}
    order.init_exited = True
    with pytest.raises(errors.FailedPrecondition):
        order.begin_exec("c")
    assert not await order.wait_execs(0.01)
    order.end_exec("a")
    order.end_exec("a")  # idempotent
    waiting = asyncio.create_task(order.wait_execs(1))
    await asyncio.sleep(0)
    order.end_exec("b")
    assert await waiting
