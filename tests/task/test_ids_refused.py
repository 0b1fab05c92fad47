"""Task and exec ids that are not containerd identifiers are refused before any path is built."""

from __future__ import annotations

import pytest

from kata_shim import errors
from kata_shim.proto import task_pb2
from tests.task.harness import CTX, harness

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

BAD = ["", "../x", "..", "a/b", "x" * 200]


@pytest.mark.parametrize("bad", BAD)
async def test_create_refuses_a_bad_task_id_without_touching_a_sandbox(bad: str) -> None:
    async with harness() as h:
        bundle = h.bundle("c1", ["x"])
        with pytest.raises(errors.InvalidArgument):
            await h.service.Create(CTX, task_pb2.CreateTaskRequest(id=bad, bundle=bundle))
        assert not h.service._containers
        assert not h.publisher.of("/tasks/create")


@pytest.mark.parametrize("bad", BAD)
async def test_exec_refuses_a_bad_exec_id(bad: str) -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        await h.create("c1", ["sleep"])
        with pytest.raises(errors.InvalidArgument):
            await h.exec("c1", bad, ["sleep"])
        assert not h.publisher.of("/tasks/exec-added")


@pytest.mark.parametrize("bundle", ["", "bundles/c1", "../c1"])
async def test_create_refuses_a_relative_bundle(bundle: str) -> None:
    """A relative bundle would resolve against the shim's cwd: another task's bundle (fuzz)."""
    async with harness() as h:
        h.bundle("c1", ["x"])
        with pytest.raises(errors.InvalidArgument, match="absolute"):
            await h.service.Create(CTX, task_pb2.CreateTaskRequest(id="c2", bundle=bundle))
        assert not h.service._containers
