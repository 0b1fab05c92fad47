"""The guest agent driven through the local sandbox with the generated agent client."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest

from kata_shim import errors, oci
from kata_shim.proto import agent_pb2, oci_pb2
from tests.fakes.agent_env import container_spec, create_request, local_agent, read_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def run(coro):
    return asyncio.run(coro)


async def start_and_wait(h, cid: str, args: list[str], **spec_kw) -> tuple[bytes, bytes, int]:
    await h.agent.CreateContainer(create_request(cid, container_spec(args, **spec_kw)))
    await h.agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id=cid, exec_id=cid))
    await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
    out, err = await asyncio.gather(read_all(h.agent, cid, cid), read_all(h.agent, cid, cid, True))
    status = await h.agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
    return out, err, status.status


def runc_list(h) -> list[str]:
    root = h.sandbox.agent_state / "runc"
    result = subprocess.run(
        ["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True
    )
    return result.stdout.split()


def test_run_container_output_and_exit_code() -> None:
    async def main() -> None:
        async with local_agent() as h:
            out, err, code = await start_and_wait(
                h, "c1", ["/bin/sh", "-c", "echo hello; echo oops >&2; exit 7"]
            )
            assert (out, err, code) == (b"hello\n", b"oops\n", 7)
            out2, _, code2 = await start_and_wait(h, "c2", ["/bin/sh", "-c", "seq 1 20000"])
            assert out2 == "".join(f"{i}\n" for i in range(1, 20001)).encode() and code2 == 0
            for cid in ("c1", "c2"):
                await h.agent.RemoveContainer(
                    agent_pb2.RemoveContainerRequest(container_id=cid, timeout=10)
                )
            assert runc_list(h) == []

    run(main())


def test_errors_for_unknown_duplicate_and_wrong_state() -> None:
    async def main() -> None:
        async with local_agent() as h:
            with pytest.raises(errors.NotFound):
                await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="nope"))
            spec = container_spec(["/bin/sleep", "30"])
            await h.agent.CreateContainer(create_request("d1", spec))
            with pytest.raises(errors.AlreadyExists):
                await h.agent.CreateContainer(create_request("d1", spec))
            with pytest.raises(errors.FailedPrecondition):
                await h.agent.PauseContainer(agent_pb2.PauseContainerRequest(container_id="d1"))
            with pytest.raises(errors.FailedPrecondition):
                await h.agent.ExecProcess(
                    agent_pb2.ExecProcessRequest(
                        container_id="d1", exec_id="e", process=oci_pb2.Process(Args=["/bin/true"])
                    )
                )
            with pytest.raises(errors.InvalidArgument):
                await h.agent.CreateContainer(agent_pb2.CreateContainerRequest(container_id="d2"))
            await h.agent.RemoveContainer(
                agent_pb2.RemoveContainerRequest(container_id="d1", timeout=10)
            )
            with pytest.raises(errors.NotFound):
                await h.agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id="d1"))

    run(main())


def _process(args: list[str], terminal: bool = False) -> oci_pb2.Process:
    spec = container_spec(args, terminal=terminal)
    return oci.process_from_json(spec["process"])


def test_exec_with_stdin_cat_and_close() -> None:
    async def main() -> None:
        async with local_agent() as h:
            await h.agent.CreateContainer(
                create_request("x1", container_spec(["/bin/sleep", "60"]))
            )
            await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="x1"))
            await h.agent.ExecProcess(
                agent_pb2.ExecProcessRequest(
                    container_id="x1", exec_id="cat", process=_process(["/bin/cat"])
                )
            )
            payload = os.urandom(300_000)
            reader = asyncio.ensure_future(read_all(h.agent, "x1", "cat"))
            for i in range(0, len(payload), 50_000):
                reply = await h.agent.WriteStdin(
                    agent_pb2.WriteStreamRequest(
                        container_id="x1", exec_id="cat", data=payload[i : i + 50_000]
                    )
                )
                assert reply.len == len(payload[i : i + 50_000])
            await h.agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id="x1", exec_id="cat"))
            assert await reader == payload
            status = await h.agent.WaitProcess(
                agent_pb2.WaitProcessRequest(container_id="x1", exec_id="cat")
            )
            assert status.status == 0
            with pytest.raises(errors.NotFound):  # released after WaitProcess
                await h.agent.ReadStdout(
                    agent_pb2.ReadStreamRequest(container_id="x1", exec_id="cat", len=10)
                )

    run(main())


def test_tty_exec_with_resize() -> None:
    async def main() -> None:
        async with local_agent() as h:
            await h.agent.CreateContainer(
                create_request("t1", container_spec(["/bin/sleep", "60"]))
            )
            await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="t1"))
            proc = _process(["/bin/sh", "-c", "sleep 0.5; stty size"], terminal=True)
            await h.agent.ExecProcess(
                agent_pb2.ExecProcessRequest(container_id="t1", exec_id="tty", process=proc)
            )
            await h.agent.TtyWinResize(
                agent_pb2.TtyWinResizeRequest(container_id="t1", exec_id="tty", row=33, column=101)
            )
            out = await read_all(h.agent, "t1", "tty")
            assert b"33 101" in out
            assert (await read_all(h.agent, "t1", "tty", stderr=True)) == b""
            with pytest.raises(errors.Unavailable):
                await h.agent.TtyWinResize(
                    agent_pb2.TtyWinResizeRequest(container_id="t1", exec_id="t1", row=1, column=1)
                )

    run(main())


def test_signals_give_128_plus_signal() -> None:
    async def main() -> None:
        async with local_agent() as h:
            await h.agent.CreateContainer(
                create_request("s1", container_spec(["/bin/sleep", "60"]))
            )
            await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="s1"))
            await h.agent.ExecProcess(
                agent_pb2.ExecProcessRequest(
                    container_id="s1", exec_id="term", process=_process(["/bin/sleep", "60"])
                )
            )
            await h.agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id="s1", exec_id="term"))
            await asyncio.sleep(0.2)
            await h.agent.SignalProcess(
                agent_pb2.SignalProcessRequest(
                    container_id="s1", exec_id="term", signal=signal.SIGTERM
                )
            )
            term = await h.agent.WaitProcess(
                agent_pb2.WaitProcessRequest(container_id="s1", exec_id="term")
            )
            assert term.status == 143
            # PID 1 without a TERM handler: SIGTERM is upgraded to SIGKILL (Kata agent semantics)
            await h.agent.SignalProcess(
                agent_pb2.SignalProcessRequest(container_id="s1", exec_id="", signal=signal.SIGTERM)
            )
            init = await h.agent.WaitProcess(
                agent_pb2.WaitProcessRequest(container_id="s1", exec_id="s1")
            )
            assert init.status == 137
            with pytest.raises(errors.NotFound):
                await h.agent.SignalProcess(
                    agent_pb2.SignalProcessRequest(container_id="s1", exec_id="", signal=0)
                )

    run(main())


def test_pause_resume_stats_and_update() -> None:
    async def main() -> None:
        async with local_agent() as h:
            spec = container_spec(
                [
                    "/bin/sh",
                    "-c",
                    "x=$(head -c 20000000 /dev/zero | tr '\\0' a); "
                    "while :; do echo tick; sleep 0.1; done",
                ]
            )
            await h.agent.CreateContainer(create_request("p1", spec))
            await h.agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id="p1", exec_id="p1"))
            await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="p1"))

            def read():
                return h.agent.ReadStdout(
                    agent_pb2.ReadStreamRequest(container_id="p1", exec_id="p1", len=4096)
                )

            assert b"tick" in (await read()).data
            await h.agent.PauseContainer(agent_pb2.PauseContainerRequest(container_id="p1"))
            await asyncio.sleep(0.3)
            assert await _frozen(h), "output kept coming while paused"
            await h.agent.ResumeContainer(agent_pb2.ResumeContainerRequest(container_id="p1"))
            assert b"tick" in (await read()).data
            stats = (
                await h.agent.StatsContainer(agent_pb2.StatsContainerRequest(container_id="p1"))
            ).cgroup_stats
            assert stats.memory_stats.usage.usage > 0
            assert stats.cpu_stats.cpu_usage.total_usage > 0
            assert stats.pids_stats.current >= 1
            limit = 200 << 20
            resources = oci_pb2.LinuxResources(Memory=oci_pb2.LinuxMemory(Limit=limit, Swap=limit))
            await h.agent.UpdateContainer(
                agent_pb2.UpdateContainerRequest(container_id="p1", resources=resources)
            )
            stats = (
                await h.agent.StatsContainer(agent_pb2.StatsContainerRequest(container_id="p1"))
            ).cgroup_stats
            assert stats.memory_stats.usage.limit == limit
            await h.agent.RemoveContainer(
                agent_pb2.RemoveContainerRequest(container_id="p1", timeout=10)
            )

    run(main())


async def _frozen(h) -> bool:
    """Drain output buffered before the pause; then a read must block (deadline passes)."""
    request = agent_pb2.ReadStreamRequest(container_id="p1", exec_id="p1", len=65536)
    for _ in range(50):
        try:
            await h.agent.ReadStdout(request, timeout=0.5)
        except errors.DeadlineExceeded:
            return True
    return False


def test_oom_event() -> None:
    async def main() -> None:
        async with local_agent() as h:
            spec = container_spec(
                ["/bin/sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"], memory=16 << 20
            )
            oom = asyncio.ensure_future(h.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
            _out, _err, code = await start_and_wait(
                h, "oom1", spec["process"]["args"], memory=16 << 20
            )
            event = await asyncio.wait_for(oom, 10)
            assert event.container_id == "oom1"
            assert code != 0

    run(main())


def test_killing_the_agent_fails_in_flight_calls_promptly() -> None:
    async def main() -> None:
        async with local_agent() as h:
            await h.agent.CreateContainer(
                create_request("k1", container_spec(["/bin/sleep", "60"]))
            )
            await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="k1"))
            wait = asyncio.ensure_future(
                h.agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id="k1", exec_id="k1"))
            )
            read = asyncio.ensure_future(
                h.agent.ReadStdout(
                    agent_pb2.ReadStreamRequest(container_id="k1", exec_id="k1", len=10)
                )
            )
            await asyncio.sleep(0.3)
            os.kill(h.sandbox.pid, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            started = loop.time()
            for call in (wait, read):
                with pytest.raises(errors.Unavailable):
                    await asyncio.wait_for(call, 2)
            assert loop.time() - started < 2
            assert await asyncio.wait_for(h.sandbox.wait(), 5) == -signal.SIGKILL

    run(main())
