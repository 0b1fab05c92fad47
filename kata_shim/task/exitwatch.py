"""Exit watching: one exit-watch task per process that exists in the agent.

Sequence per process (docs/exits.md): drain stdout/stderr to EOF → WaitProcess
(an error means the agent/sandbox is gone → 255) → close the host stdio (clients
see EOF) → for the init, hold the exit until the container's execs have
reported theirs (killing them first); for a pod's sandbox container, also
until the pod's other containers reported theirs (killing them first, as Kata
stops the sandbox) → record the exit and queue TaskExit in one step under the
process lock (`report_exit`). iSulad's exit fifo (exitfifo.py) gets the init's
status in that same step. Every hold is bounded (`exec_exit_bound`; a straggler
is reported 255). The forced stops here (execs after their init, a pod's
containers after its sandbox container) go through `force_kill`. Nothing here
tears a sandbox down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterable

from kata_shim.errors import ShimError
from kata_shim.process.exits import UNKNOWN_EXIT, finish_exit, normalise_status
from kata_shim.process.process import ExitRecord, Process
from kata_shim.process.states import ProcessState
from kata_shim.proto import events_pb2
from kata_shim.task.containers import Container, TaskEnv, Topic

__all__ = [
    "abort_pod_processes",
    "force_kill",
    "kill_execs",
    "report_exit",
    "spawn_exit_watch",
    "watch_exit",
]

log = logging.getLogger(__name__)

_background: set[asyncio.Task[None]] = set()  # keeps fire-and-forget tasks referenced


def spawn_exit_watch(env: TaskEnv, container: Container, process: Process) -> None:
    process.exit_watch = asyncio.get_running_loop().create_task(_guarded(env, container, process))


async def _guarded(env: TaskEnv, container: Container, process: Process) -> None:
    """A bug in the exit watch must not leave Wait hanging: report 255 instead."""
    try:
        await watch_exit(env, container, process)
    except Exception:
        process.log.exception("exit watch failed")
        await report_exit(env, container, process, UNKNOWN_EXIT)


async def watch_exit(env: TaskEnv, container: Container, process: Process) -> None:
    """Drain, WaitProcess, close stdio, order, record + publish the exit."""
    if process.pumps is not None:
        await process.pumps.drained()
    raw = await _wait_process(container, process)
    observed = time.monotonic()
    status = normalise_status(raw, process.delivered_signals)
    if process.pumps is not None:
        await process.pumps.close()
    if process.is_init:
        await _hold_init_exit(env, container)
        if container.siblings is not None:
            await _hold_sandbox_exit(env, container)
    await report_exit(env, container, process, status, observed)


async def _wait_process(container: Container, process: Process) -> int:
    try:
        return await container.pod.agent.wait(container.id, process.agent_exec_id)
    except ShimError as exc:
        process.log.warning("WaitProcess failed (%s): exit status %d", exc, UNKNOWN_EXIT)
        return UNKNOWN_EXIT


async def report_exit(
    env: TaskEnv,
    container: Container,
    process: Process,
    status: int,
    observed: float | None = None,
) -> None:
    """Record the exit and queue TaskExit (once); for an exec, let a held init exit go.

    `observed`: when the agent reported the exit (monotonic), for the exit-to-event metric.
    """

    def published(proc: Process, record: ExitRecord) -> None:
        event = events_pb2.TaskExit(
            container_id=container.id,
            id=proc.event_id,
            pid=container.pid,
            exit_status=record.status,
            exited_at=record.timestamp(),
        )
        env.publish(Topic.EXIT, event)
        if observed is not None:
            env.observer.exit_published(time.monotonic() - observed)
        proc.log.info("exited with status %d", record.status)
        if proc.is_init:
            env.exit_fifos.write(container.id, record.status)

    await finish_exit(process, status, published)
    if not process.is_init:
        container.order.end_exec(process.exec_id)


async def _hold_init_exit(env: TaskEnv, container: Container) -> None:
    """Exec exits go first: once the init is gone, kill the execs and wait (bounded)."""
    order = container.order
    order.init_exited = True
    if not order.active:
        return
    container.init.log.info("init exited; waiting for %d exec(s) to exit", len(order.active))
    await kill_execs(env, container, order.active)
    if await order.wait_execs(env.tuning.exec_exit_bound):
        return
    for exec_id in order.active:
        process = container.execs.get(exec_id)
        if process is not None:
            process.log.warning("no exit %gs after the init's", env.tuning.exec_exit_bound)
            await report_exit(env, container, process, UNKNOWN_EXIT)
        order.end_exec(exec_id)


async def _hold_sandbox_exit(env: TaskEnv, sandbox: Container) -> None:
    """The pod's sandbox container exited: stop the pod's containers, report them first."""
    assert sandbox.siblings is not None
    others = [c for c in sandbox.siblings() if not c.init.exited]
    if not others:
        return
    sandbox.init.log.info("sandbox exited; stopping %d container(s) of the pod first", len(others))
    for other in others:
        await _kill_container(env, other)
    waits = {asyncio.ensure_future(other.init.wait()): other for other in others}
    _, late = await asyncio.wait(waits, timeout=env.tuning.exec_exit_bound)
    for future in late:
        future.cancel()
        other = waits[future]
        other.init.log.warning("no exit %gs after its sandbox's", env.tuning.exec_exit_bound)
        await report_exit(env, other, other.init, UNKNOWN_EXIT)


async def force_kill(
    env: TaskEnv, container: Container, targets: Iterable[Process], exec_id: str | None
) -> None:
    """SIGKILL `exec_id` (None: the whole container) for the shim's own reasons: the
    targets' exits count as killed and their output is drained only for `drain_grace`.
    Agent errors propagate (a stop racing the exit fails with NotFound)."""
    for process in targets:
        process.delivered_signals.add(signal.SIGKILL)
        if process.pumps is not None:
            process.pumps.abort(env.tuning.drain_grace, env.tuning.drain_abandon)
    await container.pod.agent.kill(container.id, exec_id=exec_id)


async def _kill_container(env: TaskEnv, container: Container) -> None:
    """SIGKILL every process of `container` (Kill(SIGKILL, all) without the service)."""
    running = [process for process in container.processes() if not process.exited]
    with contextlib.suppress(ShimError):
        await force_kill(env, container, running, None)


async def kill_execs(env: TaskEnv, container: Container, exec_ids: Iterable[str]) -> None:
    """SIGKILL the given execs (their pid namespace is gone); errors are expected."""
    for exec_id in list(exec_ids):
        process = container.execs.get(exec_id)
        if process is None or process.exited or process.pumps is None:
            continue
        try:
            await force_kill(env, container, [process], process.agent_exec_id)
        except ShimError as exc:
            process.log.debug("SIGKILL after the init's exit: %s", exc)


def abort_pod_processes(env: TaskEnv, containers: Iterable[Container]) -> None:
    """The sandbox died: stop waiting for host readers; settle never-started execs (255)."""
    for container in containers:
        for process in container.processes():
            if process.pumps is not None:
                process.pumps.abort(0, env.tuning.drain_abandon)
            elif process.state is ProcessState.CREATED and not process.is_init:
                task = asyncio.get_running_loop().create_task(_settle_unstarted(process))
                _background.add(task)
                task.add_done_callback(_background.discard)


async def _settle_unstarted(process: Process) -> None:
    async with process.lock:
        if process.state is ProcessState.CREATED and process.pumps is None:
            process.record_exit(UNKNOWN_EXIT)  # never ran: no TaskExit, Wait gets 255
