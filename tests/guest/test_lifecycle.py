"""Agent hygiene: nothing left behind, flat resources over many runs, bad requests survived."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.guest.cgroups import cgroup_mounts
from kata_shim.proto import agent_pb2, health_pb2, oci_pb2
from kata_shim.proto.health_ttrpc import HealthClient
from tests.fakes.agent_env import create_request, local_agent, read_all
from tests.fakes.rootfs import oci_spec

pytestmark = [pytest.mark.integration]


def descendants(pid: int) -> set[int]:
    """All processes below `pid` (by walking /proc parent links)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def sandbox_cgroups(sandbox_id: str) -> list[Path]:
    """The sandbox's cgroup parent in every mounted hierarchy, where it exists."""
    roots = set(cgroup_mounts(Path("/proc/self/mountinfo").read_text()).values())
    return [
        root / "kata_shim" / sandbox_id
        for root in roots
        if (root / "kata_shim" / sandbox_id).exists()
    ]


def agent_usage(pid: int) -> tuple[int, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return fds, rss


async def run_once(h, cid: str) -> None:
    await h.agent.CreateContainer(create_request(cid, oci_spec(["/bin/echo", cid])))
    await h.agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id=cid, exec_id=cid))
    await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
    assert await read_all(h.agent, cid, cid) == f"{cid}\n".encode()
    reply = await h.agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
    assert reply.status == 0
    await h.agent.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id=cid, timeout=10))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_100_sequential_runs_keep_fds_and_rss_flat(capsys) -> None:
    async def main() -> None:
        async with local_agent("runs") as h:
            for i in range(20):  # warm up: imports, executor, allocator arenas
                await run_once(h, f"warm{i}")
            samples = {}
            for i in range(1, 101):
                await run_once(h, f"run{i}")
                if i in (20, 50, 100):
                    samples[i] = agent_usage(h.sandbox.pid)
            with capsys.disabled():
                print(
                    "\nagent fds/RSS(kB) after run "
                    + ", ".join(f"{i}: {fds}/{rss}" for i, (fds, rss) in samples.items())
                )
            (fds20, rss20), (fds100, rss100) = samples[20], samples[100]
            assert fds100 == fds20
            assert abs(rss100 - rss20) <= rss20 * 0.10
            assert os.listdir(h.sandbox.agent_state / "containers") == []

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_destroy_sandbox_leaves_no_processes_runc_state_mounts_or_cgroups() -> None:
    async def main() -> None:
        async with local_agent("clean") as h:
            await h.agent.CreateSandbox(agent_pb2.CreateSandboxRequest(sandbox_id="clean"))
            for cid in ("a", "b"):
                await h.agent.CreateContainer(create_request(cid, oci_spec(["/bin/sleep", "60"])))
                await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
            proc = oci_pb2.Process(Args=["/bin/sleep", "60"], Cwd="/", Env=["PATH=/bin"])
            await h.agent.ExecProcess(
                agent_pb2.ExecProcessRequest(container_id="a", exec_id="e1", process=proc)
            )
            assert len(descendants(h.sandbox.pid)) >= 3
            assert Path("/sys/fs/cgroup/memory/kata_shim/clean/a").is_dir()
            assert sandbox_cgroups("clean")
            await h.agent.DestroySandbox(agent_pb2.DestroySandboxRequest())
            await asyncio.sleep(0.2)
            assert descendants(h.sandbox.pid) == set()
            assert descendants(os.getpid()) == {h.sandbox.pid}  # nothing else in our tree
            runc_state = [p for p in (h.sandbox.agent_state / "runc").iterdir() if p.is_dir()]
            assert runc_state == []
            assert sandbox_cgroups("clean") == []
            assert not list((h.sandbox.agent_state / "containers").iterdir())
            state = str(h.sandbox.spec.state_dir)
            assert state not in Path("/proc/self/mountinfo").read_text()
            # the agent still serves after DestroySandbox (the backend's stop ends it)
            reply = await HealthClient(h.client).Check(health_pb2.CheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_sigterm_makes_the_agent_remove_its_containers() -> None:
    async def main() -> None:
        async with local_agent("term") as h:
            await h.agent.CreateContainer(create_request("z", oci_spec(["/bin/sleep", "60"])))
            await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="z"))
            init_pid = int((h.sandbox.agent_state / "containers" / "z" / "init.pid").read_text())
            os.kill(h.sandbox.pid, signal.SIGTERM)
            assert await asyncio.wait_for(h.sandbox.wait(), 10) == 0
            assert not alive(init_pid)
            assert not [p for p in (h.sandbox.agent_state / "runc").iterdir() if p.is_dir()]
            assert sandbox_cgroups("term") == []

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_garbage_requests_are_errors_not_crashes() -> None:
    async def main() -> None:
        async with local_agent() as h:
            for method in (
                "CreateContainer",
                "ExecProcess",
                "ReadStdout",
                "WriteStdin",
                "UpdateContainer",
                "TtyWinResize",
                "SignalProcess",
                "RemoveContainer",
                "StatsContainer",
                "NoSuchMethod",
            ):
                with pytest.raises(errors.ShimError):
                    await h.client.call(
                        "grpc.AgentService",
                        method,
                        agent_pb2.OOMEvent(container_id="\xff" * 3),
                        agent_pb2.OOMEvent,
                        timeout=5,
                    )
            with pytest.raises(errors.ShimError):  # not even a protobuf message
                await h.client.call(
                    "grpc.AgentService",
                    "WaitProcess",
                    agent_pb2.WriteStreamRequest(data=b"\xff" * 64),
                    agent_pb2.WaitProcessResponse,
                    timeout=5,
                )
            reply = await HealthClient(h.client).Check(health_pb2.CheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    asyncio.run(main())
