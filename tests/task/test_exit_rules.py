"""Every exit-monitoring rule of contract §6.3 / docs/exits.md, one test (or more) each.

Driven through TaskService with FakeSandbox + FakeAgent + RecordingPublisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct

import pytest

from kata_shim import errors
from kata_shim.process.states import ProcessState
from tests.task.harness import CRI_SANDBOX, FAST, cri_container, harness

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


def _index(calls: list[tuple[str, ...]], *prefix: str) -> int:
    return next(i for i, call in enumerate(calls) if call[: len(prefix)] == prefix)


async def test_output_is_drained_to_eof_before_wait_process() -> None:
    async with harness() as h:
        big = os.urandom(300_000)
        h.program("talk", stdout=big, stderr=b"err\n", exit_code=3)
        out = h.fifo("out")
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
        await h.create("c1", ["talk"], stdout=out, stderr=h.fifo("err"))
        got = bytearray()

        async def read_all() -> None:
            while True:
                try:
                    chunk = os.read(reader, 65536)
                except BlockingIOError:
                    await asyncio.sleep(0.002)
                    continue
                if not chunk:
                    return
                got.extend(chunk)

        reading = asyncio.create_task(read_all())
        await h.start("c1")
        assert (await h.wait("c1")).exit_status == 3
        await asyncio.wait_for(reading, 5)  # host fd closed after the drain: EOF
        assert bytes(got) == big
        calls = h.agent("c1").calls
        wait_at = _index(calls, "WaitProcess", "c1")
        assert _index(calls, "EOF", "stdout", "c1") < wait_at
        assert _index(calls, "EOF", "stderr", "c1") < wait_at


async def test_exit_record_exists_before_wait_returns_and_before_task_exit() -> None:
    async with harness() as h:
        h.program("quick", exit_code=5)
        seen: list[tuple[ProcessState, int | None]] = []
        original = h.publisher.publish

        def checking_publish(topic, event):  # type: ignore[no-untyped-def]
            if topic == "/tasks/exit":
                init = h.service._containers["c1"].init
                record = init.exit_record
                seen.append((init.state, record.status if record else None))
            original(topic, event)

        h.publisher.publish = checking_publish  # type: ignore[method-assign]
        await h.create("c1", ["quick"])
        waiter = asyncio.create_task(h.wait("c1"))
        await h.start("c1")
        reply = await waiter
        state = await h.state("c1")  # right after Wait returned
        assert seen == [(ProcessState.STOPPED, 5)]
        assert reply.exit_status == state.exit_status == 5
        assert state.status == 3  # STOPPED


@pytest.mark.parametrize("exec_too", [False, True])
async def test_start_events_precede_exit_even_for_instant_exits(exec_too: bool) -> None:
    async with harness() as h:
        h.program("instant", exit_code=0, runtime=0)
        h.program("forever", runtime=None)
        await h.create("c1", ["instant" if not exec_too else "forever"])
        h.agent("c1").after["StartContainer"] = 0.3  # the exit is processed before the reply
        h.agent("c1").after["ExecProcess"] = 0.3
        await h.start("c1")
        if exec_too:
            await h.exec("c1", "e1", ["instant"])
            await h.start("c1", "e1")
            await h.wait("c1", "e1")
        else:
            await h.wait("c1")
        await asyncio.sleep(0.05)
        trace = h.publisher.trace()
        if exec_too:
            assert trace.index("/tasks/exec-started c1/e1") < trace.index("/tasks/exit c1/e1")
        else:
            assert trace == ["/tasks/create c1", "/tasks/start c1", "/tasks/exit c1"]


async def test_exec_exits_precede_the_init_exit_and_running_execs_are_killed() -> None:
    async with harness() as h:
        h.program("init", runtime=None)
        h.program("forever", runtime=None)
        await h.create("c1", ["init"])
        await h.start("c1")
        for n in range(3):
            await h.exec("c1", f"e{n}", ["forever"])
            await h.start("c1", f"e{n}")
        agent = h.agent("c1")
        agent.containers["c1"].init.finish(0)  # the init dies on its own
        assert (await h.wait("c1")).exit_status == 0
        exits = h.publisher.exits()
        assert exits[-1] == ("c1", "c1", 0)
        assert sorted(exits[:-1]) == [("c1", f"e{n}", 137) for n in range(3)]
        kills = [c for c in agent.calls if c[0] == "SignalProcess" and c[3] == "9"]
        assert len(kills) == 3


async def test_exec_that_never_dies_is_reported_255_before_the_init() -> None:
    async with harness() as h:
        h.program("init", runtime=None)
        h.program("stubborn", runtime=None, ignore=frozenset({signal.SIGKILL}))
        await h.create("c1", ["init"])
        await h.start("c1")
        await h.exec("c1", "e1", ["stubborn"])
        await h.start("c1", "e1")
        h.agent("c1").containers["c1"].init.finish(2)
        assert (await h.wait("c1")).exit_status == 2
        assert (await h.wait("c1", "e1")).exit_status == 255
        assert h.publisher.exits() == [("c1", "e1", 255), ("c1", "c1", 2)]


async def test_no_exec_starts_after_the_init_exited() -> None:
    async with harness() as h:
        h.program("init", runtime=None)
        await h.create("c1", ["init"])
        await h.start("c1")
        await h.exec("c1", "early", ["x"])
        await h.kill("c1", signal.SIGKILL)
        await h.wait("c1")
        with pytest.raises(errors.FailedPrecondition):
            await h.start("c1", "early")
        with pytest.raises(errors.FailedPrecondition):
            await h.exec("c1", "late", ["x"])
        assert "ExecProcess" not in h.agent("c1").names()


@pytest.mark.parametrize(
    ("sig", "bare", "expected"),
    [(signal.SIGKILL, False, 137), (signal.SIGTERM, False, 143), (signal.SIGKILL, True, 137)],
)
async def test_signalled_process_exits_128_plus_signal(sig: int, bare: bool, expected: int) -> None:
    async with harness() as h:
        h.program("sleep", runtime=None, bare_signal_status=bare)
        await h.create("c1", ["sleep"])
        await h.start("c1")
        await h.kill("c1", sig)
        assert (await h.wait("c1")).exit_status == expected
        assert h.publisher.exits() == [("c1", "c1", expected)]


async def test_plain_exit_code_equal_to_a_signal_number_is_kept() -> None:
    async with harness() as h:
        h.program("nine", exit_code=9)
        assert (await h.run("c1", ["nine"])).exit_status == 9


@pytest.mark.parametrize("how", ["agent-dies", "sandbox-dies", "sandbox-dies-hung-agent"])
async def test_agent_or_sandbox_gone_means_255_for_every_task(how: str) -> None:
    async with harness() as h:
        h.program("forever", runtime=None, exit_code=0)
        await h.create("pod", ["forever"], CRI_SANDBOX)
        await h.start("pod")
        await h.create("c2", ["forever"], cri_container("pod"))
        await h.start("c2")
        await h.exec("c2", "e1", ["forever"])
        await h.start("c2", "e1")
        await h.create("c3", ["forever"], cri_container("pod"))  # created, never started
        sandbox = h.sandbox("pod")
        if how == "agent-dies":
            sandbox.agent.die()
        else:
            sandbox.crash(close_agent=how == "sandbox-dies")
        for cid, exec_id in (("pod", ""), ("c2", "e1"), ("c2", ""), ("c3", "")):
            assert (await h.wait(cid, exec_id)).exit_status == 255
        exits = h.publisher.exits()
        assert sorted(exits) == sorted(
            [("pod", "pod", 255), ("c2", "e1", 255), ("c2", "c2", 255), ("c3", "c3", 255)]
        )
        assert exits.index(("c2", "e1", 255)) < exits.index(("c2", "c2", 255))
        assert "stop" not in sandbox.events  # exits do not wait for any teardown
        for cid in ("c3", "c2", "pod"):
            await h.delete(cid)  # Delete works although the agent is gone
        await h.shutdown_and_exit()
        assert "cleanup" in sandbox.events


async def test_wait_before_start_concurrent_repeated_and_unknown() -> None:
    async with harness() as h:
        h.program("sleepy", runtime=0.2, exit_code=4)
        await h.create("c1", ["sleepy"])
        waiters = [asyncio.create_task(h.wait("c1")) for _ in range(10)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiters)
        await h.start("c1")
        replies = await asyncio.gather(*waiters)
        assert {r.exit_status for r in replies} == {4}
        assert len({r.exited_at.ToNanoseconds() for r in replies}) == 1
        again = await h.wait("c1")
        assert again == replies[0]
        with pytest.raises(errors.NotFound):
            await h.wait("nope")
        with pytest.raises(errors.NotFound):
            await h.wait("c1", "nope")


async def test_cancelled_wait_does_not_disturb_other_waiters() -> None:
    async with harness() as h:
        h.program("sleepy", runtime=None)
        await h.create("c1", ["sleepy"])
        await h.start("c1")
        first = asyncio.create_task(h.wait("c1"))
        second = asyncio.create_task(h.wait("c1"))
        await asyncio.sleep(0.02)
        first.cancel()
        await h.kill("c1", signal.SIGKILL)
        assert (await second).exit_status == 137


async def test_exec_wait_returns_the_execs_own_exit_time() -> None:
    async with harness() as h:
        h.program("init", runtime=None)
        h.program("short", exit_code=1)
        await h.create("c1", ["init"])
        await h.start("c1")
        await h.exec("c1", "e1", ["short"])
        await h.start("c1", "e1")
        exec_exit = await h.wait("c1", "e1")
        await asyncio.sleep(0.05)
        await h.kill("c1", signal.SIGKILL)
        init_exit = await h.wait("c1")
        assert exec_exit.exit_status == 1
        assert exec_exit.exited_at.ToNanoseconds() < init_exit.exited_at.ToNanoseconds()


async def test_task_exit_is_published_before_slow_teardown_without_holding_locks() -> None:
    async with harness() as h:
        h.farm.stop_delay = 1.5
        h.program("quick", exit_code=0)
        await h.run("c1", ["quick"])
        loop = asyncio.get_running_loop()
        began = loop.time()
        await h.delete("c1")
        assert loop.time() - began < 0.5  # teardown runs in the background
        assert h.publisher.topics()[-2:] == ["/tasks/exit", "/tasks/delete"]
        events = h.sandbox("c1").events
        await h.publisher.wait_for(lambda: "stop" in events)
        assert "stopped" not in events  # still stopping
        state = await h.service.Connect(None, _connect("c1"))  # served meanwhile
        assert state.shim_pid == 4242
        await h.service.Shutdown(None, None)  # answered while the sandbox still stops
        assert "stopped" not in events and h.shutdowns == []
        await h.publisher.wait_for(lambda: h.shutdowns == [1], timeout=5)
        assert h.sandbox("c1").events[-2:] == ["stopped", "cleanup"]  # exit after teardown


def _connect(cid: str):  # type: ignore[no-untyped-def]
    from kata_shim.proto import task_pb2

    return task_pb2.ConnectRequest(id=cid)


async def test_events_go_out_in_enqueue_order() -> None:
    async with harness() as h:
        h.program("init", runtime=None)
        h.program("short", exit_code=0)
        await h.create("c1", ["init"])
        await h.start("c1")
        await h.exec("c1", "e1", ["short"])
        await h.start("c1", "e1")
        await h.wait("c1", "e1")
        await h.kill("c1", signal.SIGTERM)
        await h.wait("c1")
        await h.delete("c1", "e1")
        await h.delete("c1")
        assert h.publisher.trace() == [
            "/tasks/create c1",
            "/tasks/start c1",
            "/tasks/exec-added c1/e1",
            "/tasks/exec-started c1/e1",
            "/tasks/exit c1/e1",
            "/tasks/exit c1",
            "/tasks/delete c1",
        ]


async def test_six_parallel_execs_exiting_at_once_all_report() -> None:
    async with harness() as h:
        h.program("init", runtime=None)
        h.program("burst", runtime=0.1, exit_code=6)
        await h.create("c1", ["init"])
        await h.start("c1")
        ids = [f"e{n}" for n in range(6)]
        for exec_id in ids:
            await h.exec("c1", exec_id, ["burst"])
        await asyncio.gather(*(h.start("c1", e) for e in ids))
        replies = await asyncio.gather(*(h.wait("c1", e) for e in ids))
        assert [r.exit_status for r in replies] == [6] * 6
        assert sorted(h.publisher.exits()) == [("c1", e, 6) for e in ids]


async def test_wait_racing_exec_and_delete_never_crashes() -> None:
    async with harness() as h:
        h.program("init", runtime=None)
        h.program("blink", runtime=0.01)
        await h.create("c1", ["init"])
        await h.start("c1")

        async def churn(n: int) -> None:
            exec_id = f"x{n}"
            await h.exec("c1", exec_id, ["blink"])
            waiter = asyncio.create_task(h.wait("c1", exec_id))
            await h.start("c1", exec_id)
            await waiter
            await h.delete("c1", exec_id)

        async def prober() -> None:
            for n in range(200):
                with contextlib.suppress(errors.NotFound):
                    await h.wait("c1", f"x{n % 40}")
                await asyncio.sleep(0)

        await asyncio.gather(*(churn(n) for n in range(40)), prober(), prober())
        assert h.service._containers["c1"].execs == {}


async def test_stalled_stdout_reader_does_not_block_kill_wait_delete() -> None:
    async with harness() as h:
        h.program("flood", stdout=b"x" * 2_000_000, runtime=None)
        out = h.fifo("stall")
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)  # never read
        try:
            await h.create("c1", ["flood"], stdout=out)
            await h.start("c1")
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()
            began = loop.time()
            await h.kill("c1", signal.SIGKILL)
            assert (await h.wait("c1")).exit_status == 137
            await h.delete("c1")
            assert loop.time() - began < FAST.drain_grace + FAST.drain_abandon + 1
        finally:
            os.close(reader)


async def test_stalled_reader_with_natural_exit_is_bounded_by_stall_timeout() -> None:
    async with harness() as h:
        h.program("flood", stdout=b"y" * 1_000_000, exit_code=0)
        out = h.fifo("stall")
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
        try:
            await h.create("c1", ["flood"], stdout=out)
            await h.start("c1")
            reply = await asyncio.wait_for(h.wait("c1"), FAST.stall_timeout + 3)
            assert reply.exit_status == 0
        finally:
            os.close(reader)


async def test_exit_fifo_receives_the_init_status(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "c1").mkdir()
    fifo = tmp_path / "c1" / "exit_fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        async with harness(exit_fifo_dir=tmp_path) as h:
            h.program("seven", exit_code=7)
            await h.run("c1", ["seven"])
            h.program("three", exit_code=3)
            await h.run("c2", ["three"])  # no exit fifo for c2: a warning only
        assert os.read(reader, 16) == struct.pack("=i", 7)
    finally:
        os.close(reader)
