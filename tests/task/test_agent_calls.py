"""What the task layer asks of the agent, checked against FakeAgentClient (no ttrpc, no stdio).

Kill semantics (one agent signal per Kill; SIGKILL of an init is the whole
container; stop signals to a process the agent lost are no-ops), the forced
SIGKILLs of the exit watch (a pod's containers after its sandbox container),
rollback on agent failure, one RemoveContainer per Delete, 255 when the agent
cannot say how a process ended.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.process.process import Process, Stdio
from kata_shim.process.states import Op, ProcessState
from kata_shim.sandbox.base import SandboxSpec
from kata_shim.task import lifecycle
from kata_shim.task.containers import Container, TaskEnv, Topic
from kata_shim.task.exitwatch import spawn_exit_watch
from kata_shim.task.pod import Pod
from tests.fakes.agent_client import FakeAgentClient
from tests.fakes.publisher import RecordingPublisher
from tests.fakes.sandbox import FakeSandbox
from tests.task.harness import FAST

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


@dataclass
class Rig:
    env: TaskEnv
    pod: Pod
    agent: FakeAgentClient
    publisher: RecordingPublisher

    def container(self, cid: str, *, running: bool = True) -> Container:
        init = Process(cid, "", cid, Stdio())
        if running:
            init.apply(Op.START)
        self.agent.process_exit(cid, cid)
        return Container(cid, f"/bundles/{cid}", self.pod, init)

    def exec(self, container: Container, exec_id: str) -> Process:
        process = Process(container.id, exec_id, f"agent-{exec_id}", Stdio())
        process.apply(Op.START)
        container.execs[exec_id] = process
        self.agent.process_exit(container.id, process.agent_exec_id)
        return process


@contextlib.asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    publisher = RecordingPublisher()
    sandbox = FakeSandbox(SandboxSpec("sb", tmp_path / "sb"))
    pod = Pod("sb", sandbox, FAST)
    agent = FakeAgentClient()
    pod.attach_agent(agent)
    yield Rig(TaskEnv("testns", publisher, FAST), pod, agent, publisher)


async def test_sigkill_of_an_init_is_one_kill_of_the_whole_container(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        c1 = r.container("c1")
        x1 = r.exec(c1, "x1")
        await lifecycle.kill(r.env, c1, c1.init, signal.SIGKILL, False)
        assert r.agent.calls == [("signal", "c1", "", "9")]
        assert signal.SIGKILL in c1.init.delivered_signals
        assert signal.SIGKILL in x1.delivered_signals


async def test_a_signal_to_an_exec_goes_to_its_agent_exec_id(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        c1 = r.container("c1")
        x1 = r.exec(c1, "x1")
        await lifecycle.kill(r.env, c1, x1, signal.SIGTERM, False)
        assert r.agent.calls == [("signal", "c1", "agent-x1", "15")]
        assert c1.init.delivered_signals == set()


async def test_stop_signals_to_a_process_the_agent_lost_are_no_ops(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        c1 = r.container("c1")
        r.agent.exit("c1", "c1", 0)  # gone in the agent, exit not yet reported on the host
        await lifecycle.kill(r.env, c1, c1.init, signal.SIGTERM, False)
        await lifecycle.kill(r.env, c1, c1.init, signal.SIGKILL, False)
        with pytest.raises(errors.NotFound, match="already finished"):
            await lifecycle.kill(r.env, c1, c1.init, signal.SIGHUP, False)


async def test_unavailable_fails_kill_only_while_the_pod_lives(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        c1 = r.container("c1")
        r.agent.fail["signal"] = errors.Unavailable("agent busy")
        with pytest.raises(errors.Unavailable):
            await lifecycle.kill(r.env, c1, c1.init, signal.SIGKILL, False)
        r.pod.mark_dead("test")
        await lifecycle.kill(r.env, c1, c1.init, signal.SIGKILL, False)
        with pytest.raises(errors.NotFound):
            await lifecycle.kill(r.env, c1, c1.init, signal.SIGUSR1, False)


async def test_a_failed_pause_rolls_back_and_publishes_nothing(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        c1 = r.container("c1")
        r.agent.fail["pause"] = errors.FailedPrecondition("cgroup frozen elsewhere")
        with pytest.raises(errors.FailedPrecondition):
            await lifecycle.pause(r.env, c1)
        assert c1.init.state is ProcessState.RUNNING
        del r.agent.fail["pause"]
        await lifecycle.pause(r.env, c1)
        await lifecycle.resume(r.env, c1)
        assert r.publisher.topics() == [Topic.PAUSED, Topic.RESUMED]
        assert r.agent.names() == ["pause", "pause", "resume"]


async def test_an_exit_is_reported_and_deleted_with_one_remove(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        c1 = r.container("c1")
        spawn_exit_watch(r.env, c1, c1.init)
        r.agent.exit("c1", "c1", 7)
        assert (await c1.init.wait()).status == 7
        reply = await lifecycle.delete_init(r.env, c1)
        assert reply.exit_status == 7
        assert r.agent.calls == [("wait", "c1", "c1"), ("remove", "c1")]
        assert r.publisher.topics() == [Topic.EXIT, Topic.DELETE]


async def test_a_failed_wait_is_exit_255(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        c1 = r.container("c1")
        r.agent.fail["wait"] = errors.Unavailable("connection closed")
        spawn_exit_watch(r.env, c1, c1.init)
        assert (await c1.init.wait()).status == 255


async def test_a_sandbox_exit_sigkills_the_pods_containers_first(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        sandbox, c2 = r.container("sb"), r.container("c2")
        sandbox.siblings = lambda: [c2]
        for container in (sandbox, c2):
            spawn_exit_watch(r.env, container, container.init)
        r.agent.exit("sb", "sb", 0)
        await sandbox.init.wait()
        assert ("signal", "c2", "", "9") in r.agent.calls
        assert r.publisher.exits() == [("c2", "c2", 137), ("sb", "sb", 0)]


async def test_resize_names_the_agent_process_and_skips_an_exited_one(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        c1 = r.container("c1")
        x1 = r.exec(c1, "x1")
        await lifecycle.resize(r.env, c1, x1, 100, 40)
        x1.record_exit(0)
        await lifecycle.resize(r.env, c1, x1, 80, 24)  # exited: no agent call
        assert r.agent.calls == [("resize_tty", "c1", "agent-x1", "100", "40")]
