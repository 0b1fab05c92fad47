"""The task service over the real guest agent (local sandbox: the agent as a host process, runc).

Not a containerd test: it checks that what the fakes promise holds for the real
agent — output, exit codes, execs, pause/resume, stats, kill, teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest

from kata_shim.config.schema import AgentConfig
from kata_shim.proto import task_pb2
from kata_shim.sandbox.base import Sandbox, SandboxSpec
from kata_shim.task.service import TaskService
from tests.fakes.publisher import RecordingPublisher
from tests.task.harness import CTX, exec_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed"),
]


def _bundle(root: Path, name: str, args: list[str]) -> str:
    from tests.fakes.agent_env import container_spec

    path = root / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(container_spec(args)))
    return str(path)


async def test_run_exec_pause_stats_kill_on_the_real_agent() -> None:
    from kata_shim.sandbox.local import LocalSandbox

    # unique ids: the local agent names cgroups after them, and test runs may overlap
    c1, c2 = (f"ks-{uuid.uuid4().hex[:8]}-{n}" for n in (1, 2))

    root = Path(tempfile.mkdtemp(prefix="ks-local-", dir="/tmp"))
    sandboxes: list[Sandbox] = []

    def provider(sandbox_id: str) -> Sandbox:
        spec = SandboxSpec(
            sandbox_id, root / f"sb-{sandbox_id}", agent=AgentConfig(dial_timeout=20)
        )
        sandboxes.append(LocalSandbox(spec))
        return sandboxes[-1]

    publisher = RecordingPublisher()
    done: list[int] = []
    service = TaskService(
        namespace="t",
        publisher=publisher,
        provider_loader=lambda config_path: provider,
        on_shutdown=lambda: done.append(1),
    )
    try:
        out = root / "out"
        os.mkfifo(out)
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
        bundle = _bundle(root, "b1", ["/bin/sh", "-c", "echo hello; exit 7"])
        await service.Create(CTX, task_pb2.CreateTaskRequest(id=c1, bundle=bundle, stdout=str(out)))
        await service.Start(CTX, task_pb2.StartRequest(id=c1))
        assert (await service.Wait(CTX, task_pb2.WaitRequest(id=c1))).exit_status == 7
        await asyncio.sleep(0.05)
        assert os.read(reader, 100) == b"hello\n"
        os.close(reader)
        await service.Delete(CTX, task_pb2.DeleteRequest(id=c1))

        bundle = _bundle(root, "b2", ["/bin/sleep", "1000"])
        await service.Create(CTX, task_pb2.CreateTaskRequest(id=c2, bundle=bundle))
        await service.Start(CTX, task_pb2.StartRequest(id=c2))
        exec_request = task_pb2.ExecProcessRequest(
            id=c2, exec_id="e1", spec=exec_spec(["/bin/sh", "-c", "exit 3"])
        )
        await service.Exec(CTX, exec_request)
        await service.Start(CTX, task_pb2.StartRequest(id=c2, exec_id="e1"))
        exec_wait = await service.Wait(CTX, task_pb2.WaitRequest(id=c2, exec_id="e1"))
        assert exec_wait.exit_status == 3
        await service.Pause(CTX, task_pb2.PauseRequest(id=c2))
        await service.Resume(CTX, task_pb2.ResumeRequest(id=c2))
        stats = await service.Stats(CTX, task_pb2.StatsRequest(id=c2))
        assert stats.stats.type_url.startswith("io.containerd.cgroups.v")
        await service.Kill(CTX, task_pb2.KillRequest(id=c2, signal=signal.SIGKILL))
        assert (await service.Wait(CTX, task_pb2.WaitRequest(id=c2))).exit_status == 137
        await service.Delete(CTX, task_pb2.DeleteRequest(id=c2))
        await service.Shutdown(CTX, task_pb2.ShutdownRequest())
        await publisher.wait_for(lambda: done == [1], timeout=10)
        assert publisher.trace()[-6:] == [
            f"/tasks/exec-started {c2}/e1",
            f"/tasks/exit {c2}/e1",
            f"/tasks/paused {c2}",
            f"/tasks/resumed {c2}",
            f"/tasks/exit {c2}",
            f"/tasks/delete {c2}",
        ]
        assert not any(p.name.startswith("sb-") for p in root.iterdir())  # cleaned up
    finally:
        await service.close()
        shutil.rmtree(root, ignore_errors=True)
