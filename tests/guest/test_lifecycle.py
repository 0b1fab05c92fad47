"""Agent hygiene: nothing left behind, flat resources over many runs, bad requests survived."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.proto import agent_pb2, oci_pb2
from tests.fakes.agent_env import container_spec, create_request, local_agent, read_all

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


def agent_usage(pid: int) -> tuple[int, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return fds, rss


async def run_once(h, cid: str) -> None:
    await h.agent.CreateContainer(create_request(cid, container_spec(["/bin/echo", cid])))
    await h.agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id=cid, exec_id=cid))
    await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
    assert await read_all(h.agent, cid, cid) == f"{cid}\n".encode()
    await h.agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
    await h.agent.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id=cid, timeout=10))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_100_sequential_runs_keep_fds_and_rss_flat() -> None:
    async def main() -> None:
        async with local_agent() as h:
            for i in range(20):  # warm up
                await run_once(h, f"warm{i}")
            base = agent_usage(h.sandbox.pid)
            for i in range(80):
                await run_once(h, f"run{i}")
            end = agent_usage(h.sandbox.pid)
            print(f"agent fds {base[0]} -> {end[0]}, RSS {base[1]} kB -> {end[1]} kB")
            assert end[0] <= base[0] * 1.1
            assert end[1] <= base[1] * 1.1

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_destroy_sandbox_leaves_no_processes_runc_state_or_cgroups() -> None:
    async def main() -> None:
        async with local_agent("clean") as h:
            await h.agent.CreateSandbox(agent_pb2.CreateSandboxRequest(sandbox_id="clean"))
            for cid in ("a", "b"):
                await h.agent.CreateContainer(
                    create_request(cid, container_spec(["/bin/sleep", "60"]))
                )
                await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
            proc = oci_pb2.Process(Args=["/bin/sleep", "60"], Cwd="/", Env=["PATH=/bin"])
            await h.agent.ExecProcess(
                agent_pb2.ExecProcessRequest(container_id="a", exec_id="e1", process=proc)
            )
            assert len(descendants(h.sandbox.pid)) >= 3
            assert Path("/sys/fs/cgroup/memory/kata_shim/clean/a").is_dir()
            await h.agent.DestroySandbox(agent_pb2.DestroySandboxRequest())
            await asyncio.sleep(0.2)
            assert descendants(h.sandbox.pid) == set()
            runc_state = [p for p in (h.sandbox.agent_state / "runc").iterdir() if p.is_dir()]
            assert runc_state == []
            assert not Path("/sys/fs/cgroup/memory/kata_shim/clean/a").exists()
            assert not list((h.sandbox.agent_state / "containers").iterdir())

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_cleanup_after_agent_crash_deletes_leftover_containers() -> None:
    async def main() -> None:
        async with local_agent("crash") as h:
            await h.agent.CreateContainer(create_request("z", container_spec(["/bin/sleep", "60"])))
            await h.agent.StartContainer(agent_pb2.StartContainerRequest(container_id="z"))
            init_pid = int((h.sandbox.agent_state / "containers" / "z" / "init.pid").read_text())
            os.kill(h.sandbox.pid, 9)
            await h.sandbox.wait()
            assert alive(init_pid)  # orphaned container still running
            await h.sandbox.cleanup()
            await asyncio.sleep(0.2)
            assert not alive(init_pid)

    asyncio.run(main())


@pytest.mark.timeout(120)
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
            ):
                with pytest.raises(errors.ShimError):
                    await h.client.call(
                        "grpc.AgentService",
                        method,
                        agent_pb2.OOMEvent(container_id="\xff" * 3),
                        agent_pb2.OOMEvent,
                        timeout=5,
                    )
            from kata_shim.proto import health_pb2
            from kata_shim.proto.health_ttrpc import HealthClient

            reply = await HealthClient(h.client).Check(health_pb2.CheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    asyncio.run(main())
