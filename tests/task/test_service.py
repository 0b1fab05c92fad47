"""The 17 Task RPCs: containerd's semantics and error classes (contract §3.2)."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim import errors
from kata_shim.proto import (
    cgroups_v1_pb2,
    events_pb2,
    mount_pb2,
    runtimeoptions_pb2,
    task_pb2,
)
from tests.fakes.sandbox import GUEST_SHARE
from tests.task.harness import CRI_SANDBOX, CTX, cri_container, harness

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

CREATED, RUNNING, STOPPED, PAUSED = 1, 2, 3, 4


def last_call(agent, name: str) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    return [call for call in agent.calls if call[0] == name][-1]


async def test_create_boots_a_sandbox_and_creates_the_container_in_the_agent() -> None:
    async with harness() as h:
        reply = await h.create("c1", ["sleep"], stdout="/dev/null", terminal=False)
        sandbox = h.sandbox("c1")
        assert reply.pid == sandbox.pid > 0
        agent = sandbox.agent
        assert agent.names()[:2] == ["CreateSandbox", "CreateContainer"]
        spec = agent.containers["c1"].spec
        assert spec.Root.Path == f"{GUEST_SHARE}/c1/rootfs"
        # pid: the agent's choice (sandbox_pidns); network: left to the VM
        assert [ns.Type for ns in spec.Linux.Namespaces] == []
        assert not agent.containers["c1"].sandbox_pidns
        assert spec.Linux.CgroupsPath == ""
        assert sandbox.shared["c1/rootfs"] == h.root / "bundles" / "c1" / "rootfs"
        (event,) = h.publisher.of("/tasks/create")
        assert isinstance(event, events_pb2.TaskCreate)
        assert (event.container_id, event.pid, event.io.stdout) == ("c1", reply.pid, "/dev/null")
        assert event.bundle.endswith("/bundles/c1")
        state = await h.state("c1")
        assert (state.status, state.pid, state.stdout) == (CREATED, reply.pid, "/dev/null")


async def test_sandbox_gets_the_pod_netns_and_configures_the_guest_before_create_sandbox() -> None:
    async with harness() as h:
        await h.create("c1", ["sleep"])
        sandbox = h.sandbox("c1")
        assert sandbox.network is not None and str(sandbox.network.netns) == "/proc/1/ns/net"
        assert sandbox.network_events == [
            "use /proc/1/ns/net",
            "start",
            "configure (agent calls so far: none)",
        ]
        assert sandbox.agent.names()[:2] == ["CreateSandbox", "CreateContainer"]


async def test_create_errors() -> None:
    async with harness() as h:
        await h.create("c1", ["x"])
        with pytest.raises(errors.AlreadyExists):
            await h.create("c1", ["x"])
        with pytest.raises(errors.InvalidArgument):
            await h.service.Create(CTX, task_pb2.CreateTaskRequest(id="", bundle="/tmp"))
        with pytest.raises(errors.NotFound):
            await h.service.Create(CTX, task_pb2.CreateTaskRequest(id="c2", bundle="/nonexistent"))
        with pytest.raises(errors.NotFound):  # pod container without its sandbox
            await h.create("c3", ["x"], cri_container("nopod"))
        assert "c2" not in h.service._containers and "c3" not in h.service._containers


async def test_failed_create_undoes_everything_and_tears_a_new_sandbox_down() -> None:
    async with harness() as h:
        h.program("x")
        bundle = h.bundle("c1", ["x"])
        # make CreateContainer fail in the sandbox that Create is about to boot
        original = h.farm.__call__

        def provider(sandbox_id):  # type: ignore[no-untyped-def]
            sandbox = original(sandbox_id)
            sandbox.agent.fail["CreateContainer"] = errors.InvalidArgument("bad spec")
            return sandbox

        h.service._provider = provider
        with pytest.raises(errors.InvalidArgument):
            await h.service.Create(CTX, task_pb2.CreateTaskRequest(id="c1", bundle=bundle))
        sandbox = h.sandbox("c1")
        await h.publisher.wait_for(lambda: "cleanup" in sandbox.events)
        assert "unshare c1" in sandbox.events
        assert h.publisher.events == []
        with pytest.raises(errors.NotFound):
            await h.state("c1")
        await h.shutdown_and_exit()


async def test_pod_containers_share_one_sandbox_and_it_goes_with_the_last() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        await h.create("pod", ["sleep"], CRI_SANDBOX)
        await h.create("app", ["sleep"], cri_container("pod"))
        assert list(h.farm.sandboxes) == ["pod"]
        assert (await h.state("app")).pid == h.sandbox("pod").pid
        for cid in ("pod", "app"):
            await h.start(cid)
        for cid in ("pod", "app"):
            await h.kill(cid, signal.SIGKILL)
            await h.wait(cid)
        await h.delete("pod")
        assert "stop" not in h.sandbox("pod").events  # "app" still lives there
        await h.service.Shutdown(CTX, task_pb2.ShutdownRequest())
        assert h.shutdowns == []
        await h.delete("app")
        await h.shutdown_and_exit()
        assert "cleanup" in h.sandbox("pod").events


async def test_provider_loader_is_called_once_with_the_options_config_path() -> None:
    async with harness() as h:
        options = runtimeoptions_pb2.Options(config_path="/etc/kata/custom.toml")
        any_options = AnyMessage(
            type_url="cri.runtimeoptions.v1.Options", value=options.SerializeToString()
        )
        await h.create("pod", ["x"], CRI_SANDBOX, options=any_options)
        await h.create("app", ["x"], cri_container("pod"))
        assert h.farm.config_paths == ["/etc/kata/custom.toml"]
        assert h.farm.built == 1


async def test_start_twice_and_state_transitions() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        await h.create("c1", ["sleep"])
        assert (await h.start("c1")).pid == h.sandbox("c1").pid
        with pytest.raises(errors.FailedPrecondition, match="cannot start process in state"):
            await h.start("c1")
        assert (await h.state("c1")).status == RUNNING
        await h.kill("c1", signal.SIGKILL)
        await h.wait("c1")
        state = await h.state("c1")
        assert (state.status, state.exit_status) == (STOPPED, 137)
        assert state.exited_at.ToNanoseconds() > 0
        with pytest.raises(errors.NotFound):
            await h.state("c1", "nope")
        with pytest.raises(errors.NotFound):
            await h.state("nope")


async def test_kill_semantics() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None, ignore=frozenset({signal.SIGHUP}))
        await h.create("c1", ["sleep"])
        await h.start("c1")
        await h.kill("c1", 0)  # liveness probe while alive
        await h.kill("c1", signal.SIGHUP)
        agent = h.agent("c1")
        assert last_call(agent, "SignalProcess") == ("SignalProcess", "c1", "c1", "1")
        await h.exec("c1", "e1", ["sleep"])
        with pytest.raises(errors.FailedPrecondition):
            await h.kill("c1", signal.SIGTERM, "e1")  # not started
        await h.start("c1", "e1")
        await h.kill("c1", signal.SIGTERM, "e1")
        agent_exec_id = h.service._containers["c1"].execs["e1"].agent_exec_id
        assert last_call(agent, "SignalProcess")[:3] == ("SignalProcess", "c1", agent_exec_id)
        assert (await h.wait("c1", "e1")).exit_status == 143
        await h.kill("c1", signal.SIGKILL)
        assert last_call(agent, "SignalProcess") == ("SignalProcess", "c1", "", "9")  # = all
        await h.wait("c1")
        await h.kill("c1", signal.SIGKILL)  # Kata: no-op on a stopped process
        await h.kill("c1", signal.SIGTERM)
        with pytest.raises(errors.NotFound):
            await h.kill("c1", 0)
        with pytest.raises(errors.NotFound):
            await h.kill("c1", signal.SIGHUP)
        with pytest.raises(errors.NotFound):
            await h.kill("nope", signal.SIGKILL)


async def test_kill_all_uses_the_empty_exec_id() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None, ignore=frozenset({signal.SIGUSR1}))
        await h.create("c1", ["sleep"])
        await h.start("c1")
        await h.kill("c1", signal.SIGUSR1, all=True)
        expected = ("SignalProcess", "c1", "", str(int(signal.SIGUSR1)))
        assert last_call(h.agent("c1"), "SignalProcess") == expected


async def test_delete_semantics() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        h.program("short", exit_code=2)
        await h.create("c1", ["sleep"])
        await h.start("c1")
        with pytest.raises(errors.FailedPrecondition, match="running"):
            await h.delete("c1")
        await h.exec("c1", "e1", ["sleep"])
        await h.start("c1", "e1")
        with pytest.raises(errors.FailedPrecondition):
            await h.delete("c1", "e1")
        await h.exec("c1", "e2", ["short"])
        await h.start("c1", "e2")
        await h.wait("c1", "e2")
        reply = await h.delete("c1", "e2")
        assert reply.exit_status == 2
        with pytest.raises(errors.NotFound):
            await h.state("c1", "e2")
        await h.exec("c1", "e3", ["short"])  # created, never started
        assert (await h.delete("c1", "e3")).exit_status == 255
        await h.kill("c1", signal.SIGKILL)
        await h.wait("c1")
        reply = await h.delete("c1")
        assert (reply.exit_status, reply.pid) == (137, h.sandbox("c1").pid)
        (event,) = h.publisher.of("/tasks/delete")
        assert (event.container_id, event.id, event.exit_status) == ("c1", "c1", 137)
        assert event.exited_at == reply.exited_at
        assert "RemoveContainer" in h.agent("c1").names()
        with pytest.raises(errors.NotFound):
            await h.delete("c1")


async def test_delete_of_a_never_started_task_kills_it_first() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        await h.create("c1", ["sleep"])
        waiter = asyncio.create_task(h.wait("c1"))
        reply = await h.delete("c1")
        assert reply.exit_status == 137
        assert (await waiter).exit_status == 137
        assert h.publisher.topics() == ["/tasks/create", "/tasks/exit", "/tasks/delete"]


async def test_exec_errors() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        await h.create("c1", ["sleep"])
        await h.start("c1")
        await h.exec("c1", "e1", ["sleep"])
        with pytest.raises(errors.AlreadyExists, match="id e1"):
            await h.exec("c1", "e1", ["sleep"])
        bad = task_pb2.ExecProcessRequest(
            id="c1", exec_id="e2", spec=AnyMessage(type_url="x", value=b"{not json")
        )
        with pytest.raises(errors.InvalidArgument):
            await h.service.Exec(CTX, bad)
        with pytest.raises(errors.NotFound):
            await h.exec("nope", "e1", ["sleep"])
        (added,) = h.publisher.of("/tasks/exec-added")
        assert (added.container_id, added.exec_id) == ("c1", "e1")
        state = await h.state("c1", "e1")
        assert (state.status, state.pid, state.exec_id) == (CREATED, 0, "e1")


async def test_resize_pty_before_and_after_exec_start() -> None:
    async with harness() as h:
        h.program("sh", runtime=None)
        await h.create("c1", ["sh"], terminal=True)
        await h.start("c1")
        req = task_pb2.ResizePtyRequest(id="c1", width=120, height=40)
        await h.service.ResizePty(CTX, req)
        assert last_call(h.agent("c1"), "TtyWinResize") == ("TtyWinResize", "c1", "c1", "40", "120")
        await h.exec("c1", "e1", ["sh"], terminal=True)
        req = task_pb2.ResizePtyRequest(id="c1", exec_id="e1", width=80, height=24)
        await h.service.ResizePty(CTX, req)  # remembered until the exec starts
        await h.start("c1", "e1")
        last = [c for c in h.agent("c1").calls if c[0] == "TtyWinResize"][-1]
        assert last[3:] == ("24", "80")


async def test_stdin_is_forwarded_then_closed_on_eof() -> None:
    async with harness() as h:
        h.program("cat", echo_stdin=True, exit_code=0)
        stdin, stdout = h.fifo("in"), h.fifo("out")
        out_reader = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
        await h.create("c1", ["cat"], stdin=stdin, stdout=stdout)
        writer = os.open(stdin, os.O_WRONLY)
        h.agent("c1").max_stdin_write = 3  # partial writes are resent
        await h.start("c1")
        os.write(writer, b"hello world\n")
        os.close(writer)  # EOF: `echo hello world | cat` must terminate
        assert (await h.wait("c1")).exit_status == 0
        assert os.read(out_reader, 100) == b"hello world\n"
        calls = [c[0] for c in h.agent("c1").calls if c[0] in ("WriteStdin", "CloseStdin")]
        assert calls[-1] == "CloseStdin" and calls.count("CloseStdin") == 1
        assert bytes(h.agent("c1").containers["c1"].init.stdin) == b"hello world\n"
        os.close(out_reader)


async def test_close_io_forwards_what_was_written_first() -> None:
    async with harness() as h:
        h.program("cat", echo_stdin=True, exit_code=0)
        stdin = h.fifo("in")
        await h.create("c1", ["cat"], stdin=stdin)
        writer = os.open(stdin, os.O_WRONLY)
        await h.start("c1")
        os.write(writer, b"abc")
        await h.service.CloseIO(CTX, task_pb2.CloseIORequest(id="c1", stdin=True))
        assert (await h.wait("c1")).exit_status == 0
        assert bytes(h.agent("c1").containers["c1"].init.stdin) == b"abc"
        os.close(writer)


async def test_close_io_without_stdin_returns_at_once_and_guest_stdin_is_closed() -> None:
    async with harness() as h:
        h.program("cat", echo_stdin=True, exit_code=0)
        await h.create("c1", ["cat"])
        calls = h.agent("c1").calls
        await h.publisher.wait_for(lambda: ("CloseStdin", "c1", "c1") in calls)  # kata #11747
        await h.start("c1")
        await asyncio.wait_for(
            h.service.CloseIO(CTX, task_pb2.CloseIORequest(id="c1", stdin=True)), 1
        )
        assert (await h.wait("c1")).exit_status == 0


async def test_pids_pause_resume_update_stats_connect_checkpoint() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        await h.create("c1", ["sleep"])
        await h.start("c1")
        pids = await h.service.Pids(CTX, task_pb2.PidsRequest(id="c1"))
        assert [p.pid for p in pids.processes] == [h.sandbox("c1").pid]
        await h.exec("c1", "e1", ["sleep"])
        await h.start("c1", "e1")
        await h.service.Pause(CTX, task_pb2.PauseRequest(id="c1"))
        assert (await h.state("c1")).status == PAUSED
        assert (await h.state("c1", "e1")).status == PAUSED
        with pytest.raises(errors.FailedPrecondition, match="cannot pause process in state paused"):
            await h.service.Pause(CTX, task_pb2.PauseRequest(id="c1"))
        await h.service.Resume(CTX, task_pb2.ResumeRequest(id="c1"))
        assert (await h.state("c1")).status == RUNNING
        assert h.publisher.topics()[-2:] == ["/tasks/paused", "/tasks/resumed"]
        h.agent("c1").fail["PauseContainer"] = errors.Unavailable("freezer busy")
        with pytest.raises(errors.Unavailable):
            await h.service.Pause(CTX, task_pb2.PauseRequest(id="c1"))
        assert (await h.state("c1")).status == RUNNING  # rolled back from PAUSING
        resources = AnyMessage(value=json.dumps({"memory": {"limit": 1 << 28}}).encode())
        await h.service.Update(CTX, task_pb2.UpdateTaskRequest(id="c1", resources=resources))
        assert h.agent("c1").last_update.resources.Memory.Limit == 1 << 28
        h.agent("c1").stats.pids_stats.current = 3
        stats = await h.service.Stats(CTX, task_pb2.StatsRequest(id="c1"))
        assert stats.stats.type_url in (
            "io.containerd.cgroups.v1.Metrics",
            "io.containerd.cgroups.v2.Metrics",
        )
        if stats.stats.type_url.endswith("v1.Metrics"):
            metrics = cgroups_v1_pb2.Metrics.FromString(stats.stats.value)
            assert metrics.pids.current == 3
        connect = await h.service.Connect(CTX, task_pb2.ConnectRequest(id="c1"))
        assert (connect.shim_pid, connect.task_pid) == (4242, h.sandbox("c1").pid)
        assert connect.version
        unknown = await h.service.Connect(CTX, task_pb2.ConnectRequest(id="nope"))
        assert unknown.task_pid == 0
        with pytest.raises(errors.Unimplemented):
            await h.service.Checkpoint(CTX, task_pb2.CheckpointTaskRequest(id="c1"))


async def test_shutdown_only_when_no_task_remains() -> None:
    async with harness() as h:
        h.program("x", exit_code=0)
        await h.shutdown_and_exit()  # nothing was ever created
    async with harness() as h:
        await h.run("c1", ["x"])
        await h.service.Shutdown(CTX, task_pb2.ShutdownRequest(now=True))
        assert h.shutdowns == []
        assert (await h.state("c1")).status == STOPPED  # still serving
        await h.delete("c1")
        await h.service.Shutdown(CTX, task_pb2.ShutdownRequest())
        await h.shutdown_and_exit()  # the second Shutdown joins the first: one exit


async def test_oom_events_are_published() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        await h.create("c1", ["sleep"])
        await h.start("c1")
        h.agent("c1").oom_events.put_nowait("c1")
        await h.publisher.wait_topic("/tasks/oom")
        (event,) = h.publisher.of("/tasks/oom")
        assert event.container_id == "c1"


async def test_rootfs_mounts_are_mounted_into_the_bundle(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "snapshot"
    source.mkdir()
    (source / "marker").write_text("here")
    async with harness() as h:
        h.program("x", exit_code=0)
        bundle = h.bundle("c1", ["x"])
        mount = mount_pb2.Mount(type="bind", source=str(source), options=["rbind", "ro"])
        req = task_pb2.CreateTaskRequest(id="c1", bundle=bundle, rootfs=[mount])
        try:
            await h.service.Create(CTX, req)
        except errors.FailedPrecondition as exc:
            pytest.skip(f"cannot mount here: {exc}")
        rootfs = h.root / "bundles" / "c1" / "rootfs"
        assert (rootfs / "marker").read_text() == "here"
        (event,) = h.publisher.of("/tasks/create")
        assert list(event.rootfs) == [mount]
        await h.start("c1")
        await h.wait("c1")
        await h.delete("c1")
        assert not (rootfs / "marker").exists()


async def test_bad_stdio_fails_before_anything_exists_in_the_guest() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        with pytest.raises(errors.InvalidArgument):
            await h.create("c1", ["sleep"], stdout=str(h.root / "no-such-fifo"))
        assert "CreateContainer" not in h.agent("c1").names()
        await h.create("c2", ["sleep"])
        await h.start("c2")
        await h.exec("c2", "e1", ["sleep"], stdout=str(h.root / "no-such-fifo"))
        with pytest.raises(errors.InvalidArgument):
            await h.start("c2", "e1")
        assert "ExecProcess" not in h.agent("c2").names()
        assert (await h.state("c2", "e1")).status == CREATED
        await h.kill("c2", signal.SIGKILL)
        assert (await asyncio.wait_for(h.wait("c2"), 2)).exit_status == 137  # not held


async def test_shutdown_finishes_even_when_containerd_gives_up_waiting() -> None:
    async with harness() as h:
        h.farm.stop_delay = 0.5
        h.program("x", exit_code=0)
        await h.run("c1", ["x"])
        await h.delete("c1")
        call = asyncio.create_task(h.service.Shutdown(CTX, task_pb2.ShutdownRequest()))
        await asyncio.sleep(0.1)
        call.cancel()  # containerd's 3 s Shutdown timeout closed the connection
        await h.publisher.wait_for(lambda: h.shutdowns == [1])
        assert "cleanup" in h.sandbox("c1").events
