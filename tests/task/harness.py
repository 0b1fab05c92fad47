"""A TaskService wired to fakes, plus request builders, for tests/task and tests/process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim.proto import task_pb2
from kata_shim.task.profile import client_profile
from kata_shim.task.service import TaskService
from kata_shim.task.tuning import Tuning
from kata_shim.ttrpc.service import RequestContext
from tests.fakes.agent import FakeAgent, Program
from tests.fakes.publisher import RecordingPublisher
from tests.fakes.sandbox import FakeSandbox, SandboxFarm

CTX = RequestContext(service="containerd.task.v2.Task", method="test")

T = TypeVar("T")


def run_on(loop_kind: str, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a private asyncio or uvloop loop without touching the global loop
    (pytest-asyncio keeps one there; asyncio.run would drop it unclosed)."""
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


FAST = Tuning(
    agent_timeout=5.0,
    drain_grace=0.2,
    drain_abandon=0.5,
    stall_timeout=2.0,
    exec_exit_bound=1.0,
    delete_exit_bound=1.0,
    remove_timeout=2,
    closeio_timeout=1.0,
    sandbox_stop_timeout=1.0,
    teardown_timeout=3.0,
)

CRI_SANDBOX = {"io.kubernetes.cri.container-type": "sandbox"}


def cri_container(sandbox_id: str) -> dict[str, str]:
    return {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": sandbox_id,
    }


def exec_spec(args: list[str], terminal: bool = False, **extra: Any) -> AnyMessage:
    process = {"args": args, "cwd": "/", "env": ["PATH=/bin"], "terminal": terminal, **extra}
    return AnyMessage(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
        value=json.dumps(process).encode(),
    )


@dataclass
class Harness:
    service: TaskService
    publisher: RecordingPublisher
    farm: SandboxFarm
    root: Path
    shutdowns: list[int] = field(default_factory=list)

    async def shutdown_and_exit(self) -> None:
        """Shutdown with no task left: it answers at once (containerd's profile), then the
        service asks the daemon to exit once the sandbox teardowns ended."""
        await self.service.Shutdown(None, task_pb2.ShutdownRequest())
        await self.publisher.wait_for(lambda: bool(self.shutdowns), timeout=10)
        assert self.shutdowns == [1]

    def program(self, name: str, **kwargs: Any) -> Program:
        self.farm.programs[name] = Program(**kwargs)
        return self.farm.programs[name]

    def sandbox(self, sandbox_id: str) -> FakeSandbox:
        return self.farm.sandboxes[sandbox_id]

    def agent(self, sandbox_id: str) -> FakeAgent:
        return self.farm.agent(sandbox_id)

    def bundle(
        self,
        cid: str,
        args: list[str],
        annotations: Mapping[str, str] | None = None,
        terminal: bool = False,
    ) -> str:
        path = self.root / "bundles" / cid
        (path / "rootfs").mkdir(parents=True, exist_ok=True)
        spec = {
            "ociVersion": "1.0.2",
            "process": {"args": args, "cwd": "/", "terminal": terminal, "env": ["PATH=/bin"]},
            "root": {"path": "rootfs"},
            "hostname": cid,
            "annotations": dict(annotations or {}),
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}],
                "cgroupsPath": f"/default/{cid}",
            },
        }
        (path / "config.json").write_text(json.dumps(spec))
        return str(path)

    def fifo(self, name: str) -> str:
        path = self.root / "fifos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        return str(path)

    async def create(
        self,
        cid: str,
        args: list[str],
        annotations: Mapping[str, str] | None = None,
        **request: Any,
    ) -> task_pb2.CreateTaskResponse:
        bundle = self.bundle(cid, args, annotations, bool(request.get("terminal")))
        req = task_pb2.CreateTaskRequest(id=cid, bundle=bundle, **request)
        return await self.service.Create(CTX, req)

    async def start(self, cid: str, exec_id: str = "") -> task_pb2.StartResponse:
        return await self.service.Start(CTX, task_pb2.StartRequest(id=cid, exec_id=exec_id))

    async def wait(self, cid: str, exec_id: str = "") -> task_pb2.WaitResponse:
        return await self.service.Wait(CTX, task_pb2.WaitRequest(id=cid, exec_id=exec_id))

    async def state(self, cid: str, exec_id: str = "") -> task_pb2.StateResponse:
        return await self.service.State(CTX, task_pb2.StateRequest(id=cid, exec_id=exec_id))

    async def kill(self, cid: str, sig: int, exec_id: str = "", all: bool = False) -> None:
        req = task_pb2.KillRequest(id=cid, exec_id=exec_id, signal=sig, all=all)
        await self.service.Kill(CTX, req)

    async def delete(self, cid: str, exec_id: str = "") -> task_pb2.DeleteResponse:
        return await self.service.Delete(CTX, task_pb2.DeleteRequest(id=cid, exec_id=exec_id))

    async def exec(self, cid: str, exec_id: str, args: list[str], **request: Any) -> None:
        terminal = bool(request.pop("terminal", False))
        req = task_pb2.ExecProcessRequest(
            id=cid, exec_id=exec_id, terminal=terminal, spec=exec_spec(args, terminal), **request
        )
        await self.service.Exec(CTX, req)

    async def run(self, cid: str, args: list[str], **request: Any) -> task_pb2.WaitResponse:
        """Create + Start + Wait (like `ctr run`)."""
        await self.create(cid, args, **request)
        await self.start(cid)
        return await self.wait(cid)


@contextlib.asynccontextmanager
async def harness(
    tuning: Tuning = FAST,
    exit_fifo_dir: Path | None = None,
    lib_shim_v2: bool = False,
    **kwargs: Any,
) -> AsyncIterator[Harness]:
    """A TaskService over fakes; `lib_shim_v2` picks iSulad's client profile."""
    root = Path(tempfile.mkdtemp(prefix="ks-task-", dir="/tmp"))
    farm = SandboxFarm(root / "sandboxes")
    publisher = RecordingPublisher()
    shutdowns: list[int] = []
    service = TaskService(
        namespace="testns",
        publisher=publisher,
        provider_loader=farm.load,
        on_shutdown=lambda: shutdowns.append(1),
        profile=client_profile(lib_shim_v2=lib_shim_v2, exit_fifo_dir=exit_fifo_dir),
        shim_pid=4242,
        tuning=tuning,
        **kwargs,
    )
    h = Harness(service, publisher, farm, root, shutdowns)
    try:
        yield h
    finally:
        await service.close()
        await farm.cleanup()
        shutil.rmtree(root, ignore_errors=True)
