"""Rules the iSulad / lib-shim-v2 emulation (tests/isulad) made us add to the task service.

* A pod's sandbox container exits only after the pod's other containers: they are
  SIGKILLed and their exits reported first (bounded: a straggler is 255), as Kata
  stops the sandbox before reporting its exit. Both annotation dialects iSulad
  uses (dockershim keys from `isula run --annotation`, CRI keys) are covered.
* Stats for lib-shim-v2 is v1 Metrics with blkio as one read/write pair per device.
* lib-shim-v2 never Deletes an exec: its record is reaped after the exit (bounded memory).
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal

import pytest

from kata_shim import errors
from kata_shim.proto import agent_pb2, cgroups_v1_pb2, task_pb2
from tests.task.harness import CTX, FAST, harness

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

DOCKER = ("io.kubernetes.docker.type", "io.kubernetes.sandbox.id", "podsandbox")
CRI = ("io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id", "sandbox")


def pod_annotations(dialect: tuple[str, str, str], sandbox: str, role: str) -> dict[str, str]:
    type_key, id_key, sandbox_value = dialect
    if role == "sandbox":
        return {type_key: sandbox_value, id_key: sandbox}
    return {type_key: "container", id_key: sandbox}


@pytest.mark.parametrize("dialect", [DOCKER, CRI], ids=["dockershim", "cri"])
async def test_sandbox_exit_is_reported_after_its_containers(
    dialect: tuple[str, str, str],
) -> None:
    async with harness() as h:
        h.program("pause", runtime=None)
        h.program("app", runtime=None)
        await h.create("sb", ["pause"], pod_annotations(dialect, "sb", "sandbox"))
        await h.start("sb")
        for cid in ("c1", "c2"):
            await h.create(cid, ["app"], pod_annotations(dialect, "sb", "container"))
            await h.start(cid)
        assert len(h.farm.sandboxes) == 1  # one sandbox for the pod
        await h.kill("sb", signal.SIGKILL)
        assert (await h.wait("sb")).exit_status == 137
        exits = h.publisher.exits()
        assert exits[-1] == ("sb", "sb", 137)
        assert sorted(exits[:-1]) == [("c1", "c1", 137), ("c2", "c2", 137)]
        for cid in ("c1", "c2"):
            assert (await h.state(cid)).status == 3  # STOPPED before the sandbox's Wait returned


async def test_a_pod_container_that_does_not_die_is_reported_255_before_the_sandbox() -> None:
    async with harness() as h:
        h.program("pause", runtime=None)
        h.program("stubborn", runtime=None, ignore=frozenset({signal.SIGKILL}))
        await h.create("sb", ["pause"], pod_annotations(DOCKER, "sb", "sandbox"))
        await h.start("sb")
        await h.create("c1", ["stubborn"], pod_annotations(DOCKER, "sb", "container"))
        await h.start("c1")
        await h.kill("sb", signal.SIGKILL)
        assert (await h.wait("sb")).exit_status == 137
        assert (await h.wait("c1")).exit_status == 255
        assert h.publisher.exits() == [("c1", "c1", 255), ("sb", "sb", 137)]


async def test_containers_that_exited_already_do_not_delay_the_sandbox() -> None:
    async with harness() as h:
        h.program("pause", runtime=None)
        h.program("quick", exit_code=3)
        await h.create("sb", ["pause"], pod_annotations(CRI, "sb", "sandbox"))
        await h.start("sb")
        await h.create("c1", ["quick"], pod_annotations(CRI, "sb", "container"))
        await h.start("c1")
        assert (await h.wait("c1")).exit_status == 3
        await h.kill("sb", signal.SIGKILL)
        assert (await h.wait("sb")).exit_status == 137
        kills = [c for c in h.agent("sb").calls if c[0] == "SignalProcess"]
        assert all(call[1] != "c1" for call in kills), kills  # nothing sent to the dead one


async def test_stats_for_lib_shim_v2_are_v1_with_read_write_pairs() -> None:
    async with harness(lib_shim_v2=True) as h:
        h.program("sleep", runtime=None)
        await h.create("c1", ["sleep"])
        await h.start("c1")
        stats = h.agent("c1").stats
        stats.pids_stats.current = 2
        blkio = stats.blkio_stats.io_service_bytes_recursive
        for op, value in (("Read", 10), ("Write", 20), ("Sync", 30), ("Total", 30)):
            blkio.append(agent_pb2.BlkioStatsEntry(major=254, minor=0, op=op, value=value))
        reply = await h.service.Stats(CTX, task_pb2.StatsRequest(id="c1"))
        assert reply.stats.type_url == "io.containerd.cgroups.v1.Metrics"
        metrics = cgroups_v1_pb2.Metrics.FromString(reply.stats.value)
        assert metrics.pids.current == 2
        pairs = [(e.op, e.value) for e in metrics.blkio.io_service_bytes_recursive]
        assert pairs == [("read", 10), ("write", 20)]


async def test_exited_execs_are_reaped_for_lib_shim_v2_only() -> None:
    """iSulad never Deletes execs: their records go `exec_reap_delay` after the exit."""
    tuning = dataclasses.replace(FAST, exec_reap_delay=0.2)
    for lib_shim_v2 in (True, False):
        async with harness(tuning, lib_shim_v2=lib_shim_v2) as h:
            h.program("sleep", runtime=None)
            h.program("quick", exit_code=4)
            await h.create("c1", ["sleep"])
            await h.start("c1")
            await h.exec("c1", "e1", ["quick"])
            await h.start("c1", "e1")
            assert (await h.wait("c1", "e1")).exit_status == 4
            await asyncio.sleep(0.5)
            if lib_shim_v2:
                with pytest.raises(errors.NotFound):
                    await h.wait("c1", "e1")
            else:
                assert (await h.state("c1", "e1")).exit_status == 4
            if lib_shim_v2:
                await h.exec("c1", "e1", ["quick"])  # the id is free again
            else:
                with pytest.raises(errors.AlreadyExists):
                    await h.exec("c1", "e1", ["quick"])
            await h.kill("c1", signal.SIGKILL)
            assert (await h.wait("c1")).exit_status == 137
            await h.delete("c1")


async def test_a_shim_left_without_tasks_after_a_failed_create_exits_under_lib_shim_v2() -> None:
    """iSulad follows a failed Create with Kill(SIGKILL) only: no Shutdown, no `delete`."""
    tuning = dataclasses.replace(FAST, idle_exit_delay=0.2)
    bad = task_pb2.CreateTaskRequest(id="c1", bundle="/nonexistent/bundle")
    for lib_shim_v2 in (True, False):
        async with harness(tuning, lib_shim_v2=lib_shim_v2) as h:
            with pytest.raises(errors.NotFound):
                await h.service.Create(CTX, bad)
            with pytest.raises(errors.NotFound):
                await h.kill("c1", signal.SIGKILL)
            await asyncio.sleep(0.5)
            assert h.shutdowns == ([1] if lib_shim_v2 else [])
    async with harness(tuning, lib_shim_v2=True) as h:  # a task created meanwhile: no exit
        h.program("sleep", runtime=None)
        with pytest.raises(errors.NotFound):
            await h.service.Create(CTX, bad)
        await h.create("c2", ["sleep"])
        await asyncio.sleep(0.5)
        assert h.shutdowns == []
        await h.kill("c2", signal.SIGKILL)
        await h.wait("c2")
        await h.delete("c2")
        await h.service.Shutdown(CTX, task_pb2.ShutdownRequest(id="c2"))
        assert h.shutdowns == [1]


async def test_an_exec_whose_start_failed_is_forgotten_under_lib_shim_v2() -> None:
    for lib_shim_v2 in (True, False):
        async with harness(lib_shim_v2=lib_shim_v2) as h:
            h.program("sleep", runtime=None)
            await h.create("c1", ["sleep"])
            await h.start("c1")
            await h.exec("c1", "bad", ["nope"])
            h.agent("c1").fail["ExecProcess"] = errors.ShimError("exec failed: no such file")
            with pytest.raises(errors.ShimError, match="exec failed"):
                await h.start("c1", "bad")
            if lib_shim_v2:
                with pytest.raises(errors.NotFound):
                    await h.state("c1", "bad")
            else:  # containerd Deletes it itself
                assert (await h.state("c1", "bad")).status == 1  # CREATED
            await h.kill("c1", signal.SIGKILL)
            await h.wait("c1")
            await h.delete("c1")


async def test_shutdown_answers_after_the_teardown_for_lib_shim_v2_only() -> None:
    """iSulad runs no `delete` after Shutdown and may remove the bundle next: its Shutdown
    returns once the sandbox is gone. containerd's returns at once (its `delete` waits)."""
    for lib_shim_v2 in (True, False):
        async with harness(lib_shim_v2=lib_shim_v2) as h:
            h.farm.stop_delay = 0.5
            h.program("x", exit_code=0)
            await h.run("c1", ["x"])
            await h.delete("c1")
            await h.service.Shutdown(CTX, task_pb2.ShutdownRequest(id="c1"))
            events = h.sandbox("c1").events
            if lib_shim_v2:
                assert h.shutdowns == [1] and "cleanup" in events
            else:
                assert h.shutdowns == [] and "cleanup" not in events
                await h.publisher.wait_for(lambda: h.shutdowns == [1])
                assert "cleanup" in events
