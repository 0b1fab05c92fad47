"""The code generator: generated bases and clients, and the regeneration check."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.plugin import protoc_gen_ttrpc, regen
from kata_shim.proto import task_pb2, task_ttrpc
from kata_shim.ttrpc.service import Dispatcher, RequestContext

REPO = Path(__file__).resolve().parents[2]


def test_task_base_has_the_17_rpcs() -> None:
    names = set(task_ttrpc.TASK_DESC.methods)
    assert len(names) == 17
    assert all(callable(getattr(task_ttrpc.TaskBase, n)) for n in names)
    assert all(callable(getattr(task_ttrpc.TaskClient, n)) for n in names)
    assert task_ttrpc.TASK_DESC.name == "containerd.task.v2.Task"
    assert task_ttrpc.TASK_DESC.methods["Wait"].response_type is task_pb2.WaitResponse


class OnlyConnect(task_ttrpc.TaskBase):
    async def Connect(self, ctx: RequestContext, request: task_pb2.ConnectRequest):
        return task_pb2.ConnectResponse(shim_pid=42, task_pid=len(request.id))


def test_generated_base_works_with_the_dispatcher() -> None:
    dispatcher = Dispatcher()
    dispatcher.register(task_ttrpc.TASK_DESC, OnlyConnect())
    ctx = RequestContext("containerd.task.v2.Task", "Connect")
    payload = task_pb2.ConnectRequest(id="abc").SerializeToString()
    reply = task_pb2.ConnectResponse.FromString(asyncio.run(dispatcher.dispatch(ctx, payload)))
    assert (reply.shim_pid, reply.task_pid) == (42, 3)
    with pytest.raises(errors.Unimplemented, match="method State"):
        ctx = RequestContext("containerd.task.v2.Task", "State")
        asyncio.run(dispatcher.dispatch(ctx, b""))


def test_upper_snake_names() -> None:
    assert protoc_gen_ttrpc.upper_snake("AgentService") == "AGENT_SERVICE"
    assert protoc_gen_ttrpc.upper_snake("Task") == "TASK"


def test_checked_in_code_is_up_to_date() -> None:
    assert regen.check() == []


def test_check_detects_a_tampered_file(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(
        REPO / "kata_shim", copy / "kata_shim", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    target = copy / "kata_shim" / "proto" / "task_ttrpc.py"
    target.write_text(target.read_text().replace("TaskBase", "TaskBaseX", 1))
    code = "import sys; from kata_shim.plugin import regen; sys.exit(regen.main(['--check']))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=copy,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "task_ttrpc.py" in result.stderr
