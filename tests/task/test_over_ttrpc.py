"""TaskService served by our ttrpc Server, driven by a TaskClient, on asyncio and on uvloop.

Covers what only the wire shows: Wait survives the caller's connection going
away and works again on a new connection (containerd restart), error classes
round-trip, the whole path runs on uvloop (the shim's loop), and the reads that never
wait are the inline ones.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from kata_shim import errors
from kata_shim.proto import task_pb2
from kata_shim.proto.task_ttrpc import TaskBase, TaskClient
from kata_shim.ttrpc.client import Client
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher
from tests.task.harness import CTX, exec_spec, harness, run_on

pytestmark = [pytest.mark.timeout(30), pytest.mark.parametrize("loop", ["asyncio", "uvloop"])]


async def _scenario() -> None:
    async with harness() as h:
        h.program("sleep", runtime=None)
        h.program("cat", echo_stdin=True, exit_code=0)
        dispatcher = Dispatcher()
        dispatcher.register(TaskBase.DESC, h.service)
        server = Server(dispatcher)
        path = str(h.root / "shim.sock")
        await server.serve_unix(path)
        try:
            await _drive(h, path)
        finally:
            server.close()
            await server.wait_closed()


async def _drive(h, path: str) -> None:  # type: ignore[no-untyped-def]
    first = await Client.connect_unix(path, timeout=5)
    task = TaskClient(first)
    bundle = h.bundle("c1", ["sleep"])
    created = await task.Create(task_pb2.CreateTaskRequest(id="c1", bundle=bundle))
    pending = asyncio.create_task(task.Wait(task_pb2.WaitRequest(id="c1")))
    await task.Start(task_pb2.StartRequest(id="c1"))
    with pytest.raises(errors.NotFound):
        await task.State(task_pb2.StateRequest(id="c1", exec_id="nope"))
    first.close()  # containerd goes away with a Wait in flight
    with pytest.raises(errors.Unavailable):
        await pending
    second = await Client.connect_unix(path, timeout=5)
    task = TaskClient(second)
    connect = await task.Connect(task_pb2.ConnectRequest(id="c1"), timeout=5)
    assert connect.task_pid == created.pid
    stdin = h.fifo("in")
    request = task_pb2.ExecProcessRequest(
        id="c1", exec_id="e1", stdin=stdin, spec=exec_spec(["cat"])
    )
    await task.Exec(request)
    writer = os.open(stdin, os.O_RDWR | os.O_NONBLOCK)
    await task.Start(task_pb2.StartRequest(id="c1", exec_id="e1"))
    os.write(writer, b"ping")
    os.close(writer)
    exec_exit = await task.Wait(task_pb2.WaitRequest(id="c1", exec_id="e1"))
    assert exec_exit.exit_status == 0
    await task.Kill(task_pb2.KillRequest(id="c1", signal=signal.SIGKILL))
    reply = await task.Wait(task_pb2.WaitRequest(id="c1"))  # a new connection's Wait
    assert reply.exit_status == 137
    await task.Delete(task_pb2.DeleteRequest(id="c1"))
    await task.Shutdown(task_pb2.ShutdownRequest(id="c1"))
    await h.publisher.wait_for(lambda: h.shutdowns == [1])
    second.close()


def test_task_service_over_the_wire(loop: str) -> None:
    run_on(loop, _scenario())


def test_only_the_reads_that_never_wait_are_inline(loop: str) -> None:
    """Connect, State and Pids are answered where the request arrives (no task); each
    of them completes on its first step, here for a running task."""

    async def main() -> None:
        async with harness() as h:
            h.program("sleep", runtime=None)
            dispatcher = Dispatcher()
            dispatcher.register(TaskBase.DESC, h.service)
            desc = TaskBase.DESC
            inline = {name for name in desc.methods if dispatcher.is_inline(desc.name, name)}
            assert inline == {"Connect", "State", "Pids"}
            bundle = h.bundle("c1", ["sleep"])
            await h.service.Create(CTX, task_pb2.CreateTaskRequest(id="c1", bundle=bundle))
            await h.service.Start(CTX, task_pb2.StartRequest(id="c1"))
            requests = {
                "Connect": task_pb2.ConnectRequest(id="c1"),
                "State": task_pb2.StateRequest(id="c1"),
                "Pids": task_pb2.PidsRequest(id="c1"),
            }
            for name, request in requests.items():
                step = getattr(h.service, name)(CTX, request)
                with pytest.raises(StopIteration):  # done without waiting
                    step.send(None)
            await h.service.Kill(CTX, task_pb2.KillRequest(id="c1", signal=signal.SIGKILL))

    run_on(loop, main())
