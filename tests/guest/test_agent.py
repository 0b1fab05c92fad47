"""The guest agent driven through the local sandbox with the generated agent client.

Every test starts a real agent (LocalSandbox) and runs busybox containers with
runc; `local_agent()` asserts afterwards that the agent's state dir is gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from kata_shim import errors, oci
from kata_shim.proto import agent_pb2, oci_pb2
from tests.fakes.agent_env import create_request, local_agent, read_all
from tests.fakes.rootfs import oci_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def run(coro):
    return asyncio.run(coro)


def req(cls, cid: str, exec_id: str | None = None, **kw):
    """A request message for container `cid` (and process `exec_id` when given)."""
    if exec_id is not None:
        kw["exec_id"] = exec_id
    return cls(container_id=cid, **kw)


async def create_started(h, cid: str, args: list[str], *, stdin: bool = False, **spec_kw) -> None:
    await h.agent.CreateContainer(create_request(cid, oci_spec(args, **spec_kw)))
    if not stdin:
        await h.agent.CloseStdin(req(agent_pb2.CloseStdinRequest, cid, cid))
    await h.agent.StartContainer(req(agent_pb2.StartContainerRequest, cid))


async def start_and_wait(h, cid: str, args: list[str], **spec_kw) -> tuple[bytes, bytes, int]:
    await create_started(h, cid, args, **spec_kw)
    out, err = await asyncio.gather(read_all(h.agent, cid, cid), read_all(h.agent, cid, cid, True))
    status = await h.agent.WaitProcess(req(agent_pb2.WaitProcessRequest, cid, cid))
    return out, err, status.status


async def exec_in(h, cid: str, exec_id: str, args: list[str], terminal: bool = False) -> None:
    process = oci.process_from_json(oci_spec(args, terminal=terminal)["process"])
    await h.agent.ExecProcess(req(agent_pb2.ExecProcessRequest, cid, exec_id, process=process))


async def wait(h, cid: str, exec_id: str) -> int:
    return (await h.agent.WaitProcess(req(agent_pb2.WaitProcessRequest, cid, exec_id))).status


async def remove(h, cid: str) -> None:
    await h.agent.RemoveContainer(req(agent_pb2.RemoveContainerRequest, cid, timeout=10))


def runc_list(h) -> list[str]:
    root = h.sandbox.agent_state / "runc"
    result = subprocess.run(
        ["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_run_two_containers_output_to_eof_and_exit_codes() -> None:
    async def main() -> None:
        async with local_agent() as h:
            out, err, code = await start_and_wait(
                h, "c1", ["/bin/sh", "-c", "echo hello; echo oops >&2; exit 7"]
            )
            assert (out, err, code) == (b"hello\n", b"oops\n", 7)
            out2, _, code2 = await start_and_wait(h, "c2", ["/bin/sh", "-c", "seq 1 50000"])
            assert out2 == "".join(f"{i}\n" for i in range(1, 50001)).encode() and code2 == 0
            # WaitProcess released the init: streams are gone, the exit code stays
            with pytest.raises(errors.NotFound):
                await h.agent.ReadStdout(req(agent_pb2.ReadStreamRequest, "c1", "c1", len=9))
            with pytest.raises(errors.NotFound):
                await h.agent.WriteStdin(req(agent_pb2.WriteStreamRequest, "c1", "", data=b"x"))
            assert await wait(h, "c1", "") == 7
            assert sorted(runc_list(h)) == ["c1", "c2"]
            for cid in ("c1", "c2"):
                await remove(h, cid)
            assert runc_list(h) == []

    run(main())


def test_errors_for_unknown_duplicate_invalid_and_wrong_state() -> None:
    async def main() -> None:
        async with local_agent() as h:
            with pytest.raises(errors.NotFound):
                await h.agent.StartContainer(req(agent_pb2.StartContainerRequest, "nope"))
            spec = oci_spec(["/bin/sleep", "30"])
            results = await asyncio.gather(
                h.agent.CreateContainer(create_request("d1", spec)),
                h.agent.CreateContainer(create_request("d1", spec)),
                return_exceptions=True,
            )
            assert sum(isinstance(r, errors.AlreadyExists) for r in results) == 1, results
            with pytest.raises(errors.FailedPrecondition):  # created, not running
                await h.agent.PauseContainer(req(agent_pb2.PauseContainerRequest, "d1"))
            with pytest.raises(errors.FailedPrecondition):
                await exec_in(h, "d1", "e", ["/bin/true"])
            await h.agent.StartContainer(req(agent_pb2.StartContainerRequest, "d1"))
            with pytest.raises(errors.FailedPrecondition):
                await h.agent.StartContainer(req(agent_pb2.StartContainerRequest, "d1"))
            with pytest.raises(errors.InvalidArgument):
                await exec_in(h, "d1", "../../escape", ["/bin/true"])
            with pytest.raises(errors.InvalidArgument):
                await h.agent.CreateContainer(create_request("a/b", spec))
            with pytest.raises(errors.InvalidArgument):  # no OCI spec at all
                await h.agent.CreateContainer(agent_pb2.CreateContainerRequest(container_id="d2"))
            missing = dict(spec, root={"path": "/nonexistent/rootfs"})
            with pytest.raises(errors.NotFound):
                await h.agent.CreateContainer(create_request("d3", missing))
            await h.agent.PauseContainer(req(agent_pb2.PauseContainerRequest, "d1"))
            with pytest.raises(errors.FailedPrecondition):
                await exec_in(h, "d1", "e2", ["/bin/true"])
            await remove(h, "d1")  # removing a paused container works
            with pytest.raises(errors.NotFound):
                await h.agent.WaitProcess(req(agent_pb2.WaitProcessRequest, "d1"))
            assert runc_list(h) == []

    run(main())


def test_exec_with_stdin_cat_echoes_then_exits_after_close_stdin() -> None:
    async def main() -> None:
        async with local_agent() as h:
            await create_started(h, "x1", ["/bin/sleep", "60"])
            await exec_in(h, "x1", "cat", ["/bin/cat"])
            payload = os.urandom(600_000)
            reader = asyncio.ensure_future(read_all(h.agent, "x1", "cat"))
            for i in range(0, len(payload), 50_000):
                chunk = payload[i : i + 50_000]
                reply = await h.agent.WriteStdin(
                    req(agent_pb2.WriteStreamRequest, "x1", "cat", data=chunk)
                )
                assert reply.len == len(chunk)
            await asyncio.sleep(0.2)
            assert not reader.done(), "cat must keep running until CloseStdin"
            await h.agent.CloseStdin(req(agent_pb2.CloseStdinRequest, "x1", "cat"))
            assert await asyncio.wait_for(reader, 10) == payload
            with pytest.raises(errors.FailedPrecondition):
                await h.agent.WriteStdin(req(agent_pb2.WriteStreamRequest, "x1", "cat", data=b"x"))
            assert await wait(h, "x1", "cat") == 0
            with pytest.raises(errors.NotFound):  # an exec is forgotten after WaitProcess
                await h.agent.ReadStdout(req(agent_pb2.ReadStreamRequest, "x1", "cat", len=10))

    run(main())


def test_tty_exec_with_resize_and_tty_init() -> None:
    async def main() -> None:
        async with local_agent() as h:
            await create_started(h, "t1", ["/bin/sleep", "60"])
            await exec_in(h, "t1", "tty", ["/bin/sh", "-c", "read x; stty size"], terminal=True)
            await h.agent.TtyWinResize(
                req(agent_pb2.TtyWinResizeRequest, "t1", "tty", row=33, column=101)
            )
            await h.agent.WriteStdin(req(agent_pb2.WriteStreamRequest, "t1", "tty", data=b"go\n"))
            out = await read_all(h.agent, "t1", "tty")
            assert b"33 101" in out
            assert await read_all(h.agent, "t1", "tty", stderr=True) == b""
            assert await wait(h, "t1", "tty") == 0
            with pytest.raises(errors.Unavailable):  # the init has no terminal
                await h.agent.TtyWinResize(
                    req(agent_pb2.TtyWinResizeRequest, "t1", "t1", row=1, column=1)
                )
            out, err, code = await start_and_wait(
                h, "t2", ["/bin/sh", "-c", "tty; echo to-stderr >&2; exit 3"], terminal=True
            )
            assert b"/dev/pts/" in out and b"to-stderr" in out and (err, code) == (b"", 3)

    run(main())


def test_signals_give_128_plus_signal() -> None:
    async def main() -> None:
        async with local_agent() as h:
            await create_started(h, "s1", ["/bin/sleep", "60"])
            await exec_in(h, "s1", "term", ["/bin/sleep", "60"])
            await h.agent.SignalProcess(
                req(agent_pb2.SignalProcessRequest, "s1", "term", signal=signal.SIGTERM)
            )
            assert await wait(h, "s1", "term") == 143
            await exec_in(h, "s1", "kill", ["/bin/sleep", "60"])
            await h.agent.SignalProcess(
                req(agent_pb2.SignalProcessRequest, "s1", "kill", signal=signal.SIGKILL)
            )
            assert await wait(h, "s1", "kill") == 137
            # PID 1 without a TERM handler ignores SIGTERM: the agent sends SIGKILL (Kata)
            await h.agent.SignalProcess(
                req(agent_pb2.SignalProcessRequest, "s1", "", signal=signal.SIGTERM)
            )
            assert await wait(h, "s1", "s1") == 137
            with pytest.raises(errors.NotFound):
                await h.agent.SignalProcess(req(agent_pb2.SignalProcessRequest, "s1", "", signal=0))
            # not PID 1 (no PID namespace): SIGTERM stays SIGTERM
            await create_started(h, "s2", ["/bin/sleep", "60"], pid_ns=False)
            await h.agent.SignalProcess(
                req(agent_pb2.SignalProcessRequest, "s2", "s2", signal=signal.SIGTERM)
            )
            assert await wait(h, "s2", "s2") == 143

    run(main())


async def _frozen(h, cid: str) -> bool:
    """Drain output buffered before the pause; then a read must block (deadline passes)."""
    request = req(agent_pb2.ReadStreamRequest, cid, cid, len=65536)
    for _ in range(50):
        try:
            await h.agent.ReadStdout(request, timeout=0.5)
        except errors.DeadlineExceeded:
            return True
    return False


def test_pause_resume_stats_and_update() -> None:
    async def main() -> None:
        async with local_agent() as h:
            script = (
                # a steady second process: pids.current >= 2 at any moment
                "sleep 1000 & x=$(head -c 20000000 /dev/zero | tr '\\0' a); "
                "while :; do echo tick; sleep 0.05; done"
            )
            await create_started(h, "p1", ["/bin/sh", "-c", script])
            read = req(agent_pb2.ReadStreamRequest, "p1", "p1", len=4096)
            assert b"tick" in bytes(await h.agent.ReadStdout(read))
            await h.agent.PauseContainer(req(agent_pb2.PauseContainerRequest, "p1"))
            assert await _frozen(h, "p1"), "output kept coming while paused"
            await h.agent.ResumeContainer(req(agent_pb2.ResumeContainerRequest, "p1"))
            assert b"tick" in bytes(await h.agent.ReadStdout(read, timeout=5))
            stats = (
                await h.agent.StatsContainer(req(agent_pb2.StatsContainerRequest, "p1"))
            ).cgroup_stats
            assert stats.memory_stats.usage.usage > 1 << 20
            assert stats.memory_stats.stats["total_rss"] + stats.memory_stats.stats["rss"] > 0
            assert stats.cpu_stats.cpu_usage.total_usage > 0
            assert len(stats.cpu_stats.cpu_usage.percpu_usage) == os.cpu_count()
            assert stats.pids_stats.current >= 2
            limit = 200 << 20
            resources = oci_pb2.LinuxResources(Memory=oci_pb2.LinuxMemory(Limit=limit, Swap=limit))
            await h.agent.UpdateContainer(
                req(agent_pb2.UpdateContainerRequest, "p1", resources=resources)
            )
            stats = (
                await h.agent.StatsContainer(req(agent_pb2.StatsContainerRequest, "p1"))
            ).cgroup_stats
            assert stats.memory_stats.usage.limit == limit
            cgroup = Path("/sys/fs/cgroup/memory/kata_shim/t/p1/memory.limit_in_bytes")
            assert int(cgroup.read_text()) == limit
            await remove(h, "p1")
            assert not cgroup.parent.exists()

    run(main())


def test_oom_event_arrives_through_get_oom_event() -> None:
    async def main() -> None:
        async with local_agent() as h:
            oom = asyncio.ensure_future(h.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
            await start_and_wait(h, "fine", ["/bin/true"], memory=16 << 20)
            await asyncio.sleep(0.2)
            assert not oom.done(), "no OOM yet: the long poll must still be pending"
            hog = ["/bin/sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo $x"]
            _out, _err, code = await start_and_wait(h, "oom1", hog, memory=16 << 20)
            event = await asyncio.wait_for(oom, 10)
            assert event.container_id == "oom1" and code == 137
            stats = (
                await h.agent.StatsContainer(req(agent_pb2.StatsContainerRequest, "oom1"))
            ).cgroup_stats
            assert stats.memory_stats.usage.max_usage == stats.memory_stats.usage.limit == 16 << 20

    run(main())


def test_exec_output_is_delivered_then_eof_despite_a_background_child() -> None:
    async def main() -> None:
        async with local_agent() as h:
            await create_started(h, "b1", ["/bin/sleep", "60"])
            await exec_in(h, "b1", "bg", ["/bin/sh", "-c", "echo first; sleep 30 & echo last"])
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await read_all(h.agent, "b1", "bg") == b"first\nlast\n"
            assert loop.time() - started < 2.0  # ~0.5 s grace, not the 30 s of the child
            assert await wait(h, "b1", "bg") == 0

    run(main())


def mounted(path: Path) -> bool:
    return any(
        line.split()[4] == str(path)
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


def test_storages_are_mounted_and_removed_with_their_owner() -> None:
    async def main() -> None:
        async with local_agent("mnt") as h:
            state = h.sandbox.spec.state_dir
            shared, volume = state / "sandbox-tmpfs", state / "volume"
            (state / "host-data").mkdir()
            (state / "host-data" / "hello").write_text("from the host")
            ephemeral = agent_pb2.Storage(
                driver="ephemeral", source="tmpfs", fstype="tmpfs", mount_point=str(shared)
            )
            await h.agent.CreateSandbox(
                agent_pb2.CreateSandboxRequest(sandbox_id="mnt", storages=[ephemeral])
            )
            bind = agent_pb2.Storage(
                driver="local-bind",
                source=str(state / "host-data"),
                fstype="bind",
                options=["rbind"],
                mount_point=str(volume),
            )
            spec = oci_spec(["/bin/cat", "/data/hello"])
            spec["mounts"].append(
                {
                    "destination": "/data",
                    "source": str(volume),
                    "type": "bind",
                    "options": ["rbind"],
                }
            )
            request = create_request("m1", spec)
            request.storages.append(bind)
            await h.agent.CreateContainer(request)
            assert mounted(shared) and mounted(volume)
            await h.agent.CloseStdin(req(agent_pb2.CloseStdinRequest, "m1", ""))
            await h.agent.StartContainer(req(agent_pb2.StartContainerRequest, "m1"))
            assert await read_all(h.agent, "m1", "") == b"from the host"
            assert await wait(h, "m1", "") == 0
            await remove(h, "m1")
            assert not mounted(volume) and mounted(shared)
            await h.agent.DestroySandbox(agent_pb2.DestroySandboxRequest())
            assert not mounted(shared)
            assert (state / "host-data" / "hello").read_text() == "from the host"

    run(main())


def test_killing_the_agent_fails_in_flight_calls_promptly() -> None:
    async def main() -> None:
        async with local_agent() as h:
            await create_started(h, "k1", ["/bin/sleep", "60"])
            wait_call = asyncio.ensure_future(wait(h, "k1", "k1"))
            read_call = asyncio.ensure_future(
                h.agent.ReadStdout(req(agent_pb2.ReadStreamRequest, "k1", "k1", len=10))
            )
            oom_call = asyncio.ensure_future(h.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
            await asyncio.sleep(0.3)
            assert not (wait_call.done() or read_call.done() or oom_call.done())
            loop = asyncio.get_running_loop()
            started = loop.time()
            os.kill(h.sandbox.pid, signal.SIGKILL)
            for call in (wait_call, read_call, oom_call):
                with pytest.raises(errors.Unavailable):
                    await asyncio.wait_for(call, 2)
            assert loop.time() - started < 2
            assert await asyncio.wait_for(h.sandbox.wait(), 5) == -signal.SIGKILL

    run(main())
