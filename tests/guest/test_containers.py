"""ContainerTable with a fake runc: state checked before runc, applied after it succeeds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.guest.states import ContainerState, Op
from tests.fakes.guest import exit_init, table_with

S = ContainerState


def run(coro):
    return asyncio.run(coro)


def test_change_runs_runc_then_moves_the_state(tmp_path: Path) -> None:
    async def main() -> None:
        table, container, runc = table_with(tmp_path)
        await table.change("c1", Op.START)
        await table.change("c1", Op.PAUSE)
        assert container.state is S.PAUSED
        await table.change("c1", Op.RESUME)
        assert container.state is S.RUNNING
        assert runc.calls == [("start", "c1"), ("pause", "c1"), ("resume", "c1")]

    run(main())


def test_wrong_state_is_refused_before_runc_is_called(tmp_path: Path) -> None:
    async def main() -> None:
        table, container, runc = table_with(tmp_path)
        with pytest.raises(errors.FailedPrecondition, match="c1 is created, not running"):
            await table.change("c1", Op.PAUSE)
        with pytest.raises(errors.FailedPrecondition, match="c1 is created, not paused"):
            await table.change("c1", Op.RESUME)
        assert runc.calls == [] and container.state is S.CREATED
        with pytest.raises(errors.NotFound):
            await table.change("nope", Op.START)

    run(main())


def test_a_failed_runc_call_leaves_the_state(tmp_path: Path) -> None:
    async def main() -> None:
        table, container, runc = table_with(tmp_path)
        runc.fail["start"] = errors.ShimError("runc start failed")
        with pytest.raises(errors.ShimError, match="runc start failed"):
            await table.change("c1", Op.START)
        assert container.state is S.CREATED

    run(main())


def test_update_is_allowed_until_the_init_exits(tmp_path: Path) -> None:
    async def main() -> None:
        table, container, runc = table_with(tmp_path)
        await table.update("c1", {"cpu": {"shares": 2}})
        exit_init(container)
        await asyncio.sleep(0.01)
        with pytest.raises(errors.FailedPrecondition, match="c1 is stopped"):
            await table.update("c1", {})
        assert runc.calls == [("update", "c1")]

    run(main())


def test_remove_kills_waits_deletes_and_a_concurrent_remove_is_a_no_op(tmp_path: Path) -> None:
    async def main() -> None:
        table, container, runc = table_with(tmp_path)
        await table.change("c1", Op.START)
        runc.gates["kill"] = asyncio.Event()
        first = asyncio.create_task(table.remove("c1", timeout=5))
        second = asyncio.create_task(table.remove("c1", timeout=5))
        await asyncio.sleep(0.01)
        exit_init(container, 137)  # what the SIGKILL does
        runc.gates["kill"].set()
        await asyncio.gather(first, second)
        assert container.state is S.DELETED and len(table) == 0
        assert runc.calls == [("start", "c1"), ("kill", "c1"), ("delete", "c1")]
        assert not container.bundle.exists()
        with pytest.raises(errors.NotFound):
            await table.remove("c1", timeout=5)

    run(main())


def test_remove_times_out_and_keeps_the_container(tmp_path: Path) -> None:
    async def main() -> None:
        table, container, _ = table_with(tmp_path)
        with pytest.raises(errors.DeadlineExceeded):
            await table.remove("c1", timeout=0.05)
        assert container.state is S.CREATED and len(table) == 1
        exit_init(container)
        await table.remove("c1", timeout=5)
        assert len(table) == 0

    run(main())


def test_process_lookup_by_exec_id_or_container_id(tmp_path: Path) -> None:
    async def main() -> None:
        table, container, _ = table_with(tmp_path)
        assert table.process("c1", "") is container.init
        assert table.process("c1", "c1") is container.init
        with pytest.raises(errors.NotFound, match="exec e1 of container c1"):
            table.process("c1", "e1")

    run(main())
