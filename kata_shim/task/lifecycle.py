"""Task operations on one container: start, kill, pause/resume, delete, stdio control.

Each operation checks the state machine, calls the agent, then commits the
transition (rolling back on failure). Ordering rules enforced here: Start
holds the process lock from before the agent call until TaskStart /
TaskExecStarted is queued (the exit path needs that lock, so an instant exit
is queued after it); exec Start registers with the container's ExitOrder
(refused once the init exited). Pids reported are the sandbox's (Kata).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from kata_shim.errors import FailedPrecondition, NotFound, ShimError, Unavailable
from kata_shim.io.pumps import Pumps
from kata_shim.io.stdio import HostStdio, open_host_stdio
from kata_shim.process.exits import UNKNOWN_EXIT
from kata_shim.process.process import Process
from kata_shim.process.states import Op, ProcessState
from kata_shim.proto import events_pb2, task_pb2
from kata_shim.task.containers import Container, TaskEnv, Topic
from kata_shim.task.exitwatch import report_exit, spawn_exit_watch
from kata_shim.task.mounts import unmount_rootfs

__all__ = [
    "close_io",
    "delete_exec",
    "delete_init",
    "kill",
    "open_stdio",
    "pause",
    "release_host",
    "remove_from_agent",
    "resize",
    "resume",
    "start_exec",
    "start_init",
    "start_pumps",
]

_STOP_SIGNALS = (signal.SIGKILL, signal.SIGTERM)


async def open_stdio(env: TaskEnv, container: Container, process: Process) -> HostStdio:
    """Open the process's host stdio (before the agent process exists: nothing to undo there)."""
    stdio = process.stdio
    return await open_host_stdio(
        stdio.stdin,
        stdio.stdout,
        stdio.stderr,
        terminal=stdio.terminal,
        container_id=container.id,
        namespace=env.namespace,
        stall_timeout=env.tuning.stall_timeout,
    )


def start_pumps(env: TaskEnv, container: Container, process: Process, host: HostStdio) -> Pumps:
    """Start the pumps between `host` and the (now existing) agent process. No await:
    nothing can cancel the caller between the agent call and the exit watch's start."""
    agent = container.pod.agent
    pumps = Pumps(
        agent,
        container.id,
        process.agent_exec_id,
        host,
        terminal=process.stdio.terminal,
    )
    if process.stdin_close_requested:
        pumps.request_stdin_close()
    process.pumps = pumps
    pumps.start()
    return pumps


# start ------------------------------------------------------------------------------
async def start_init(env: TaskEnv, container: Container) -> int:
    init = container.init
    async with init.lock:
        init.check(Op.START)
        env.exit_fifos.open(container.id)
        await container.pod.agent.start(container.id)
        init.apply(Op.START)
        env.publish(Topic.START, events_pb2.TaskStart(container_id=container.id, pid=container.pid))
    return container.pid


async def start_exec(env: TaskEnv, container: Container, process: Process) -> int:
    async with process.lock:
        process.check(Op.START)
        container.init.check(Op.EXEC)
        container.order.begin_exec(process.exec_id)
        try:
            await _launch_exec(env, container, process)
        except BaseException:
            container.order.end_exec(process.exec_id)
            raise
        process.apply(Op.START)
        event = events_pb2.TaskExecStarted(
            container_id=container.id, exec_id=process.exec_id, pid=container.pid
        )
        env.publish(Topic.EXEC_STARTED, event)
        spawn_exit_watch(env, container, process)
    if container.order.init_exited:  # the init died while this exec was starting
        with contextlib.suppress(ShimError):
            await kill(env, container, process, signal.SIGKILL, False)
    size = process.spec.ConsoleSize if process.spec is not None else None
    if process.stdio.terminal and size is not None and size.Height and size.Width:
        with contextlib.suppress(ShimError):
            await _resize(env, container, process, size.Width, size.Height)
    return container.pid


async def _launch_exec(env: TaskEnv, container: Container, process: Process) -> None:
    host = await open_stdio(env, container, process)
    assert process.spec is not None  # an exec always has one (Exec)
    try:
        await container.pod.agent.exec_process(container.id, process.agent_exec_id, process.spec)
    except BaseException:
        await asyncio.shield(host.close())
        raise
    start_pumps(env, container, process, host)  # from here on, no await until the exit watch


# signals -------------------------------------------------------------------------------
async def kill(env: TaskEnv, container: Container, process: Process, sig: int, all_: bool) -> None:
    """Signal a process. Stopped: SIGKILL/SIGTERM are no-ops (Kata), others NotFound."""
    if process.exited:
        if sig in _STOP_SIGNALS:
            return
        raise NotFound(f"process {process.event_id}: already finished")
    if not process.is_init and process.state is ProcessState.CREATED:
        raise FailedPrecondition(f"cannot kill exec {process.exec_id}: it was not started")
    process.check(Op.KILL)
    whole = process.is_init and (all_ or sig == signal.SIGKILL)
    targets = [p for p in container.processes() if not p.exited] if whole else [process]
    if sig:
        for target in targets:
            target.delivered_signals.add(sig)
    try:
        agent = container.pod.agent
        await agent.signal(container.id, sig, exec_id=None if whole else process.agent_exec_id)
    except (NotFound, Unavailable) as exc:
        if isinstance(exc, Unavailable) and not container.pod.dead:
            raise
        if sig in _STOP_SIGNALS:
            return
        raise NotFound(f"process {process.event_id}: already finished") from exc
    if sig == signal.SIGKILL:
        for target in targets:
            if target.pumps is not None:
                target.pumps.abort(env.tuning.drain_grace, env.tuning.drain_abandon)


# pause / resume -------------------------------------------------------------------------
async def pause(env: TaskEnv, container: Container) -> None:
    init = container.init
    async with init.lock:
        init.apply(Op.PAUSE)
        try:
            await container.pod.agent.pause(container.id)
        except BaseException:
            init.apply(Op.UNPAUSE)
            raise
        init.apply(Op.PAUSED)
        env.publish(Topic.PAUSED, events_pb2.TaskPaused(container_id=container.id))


async def resume(env: TaskEnv, container: Container) -> None:
    init = container.init
    async with init.lock:
        init.check(Op.RESUME)
        await container.pod.agent.resume(container.id)
        init.apply(Op.RESUME)
        env.publish(Topic.RESUMED, events_pb2.TaskResumed(container_id=container.id))


# delete ----------------------------------------------------------------------------------
async def delete_init(env: TaskEnv, container: Container) -> task_pb2.DeleteResponse:
    """Delete a STOPPED (or never-started) task: agent, rootfs, then TaskDelete."""
    init = container.init
    if init.state is ProcessState.DELETED:
        raise NotFound(f"task {container.id}: not found")
    if init.state is ProcessState.CREATED:
        await _stop_created_init(env, container)
    async with init.lock:
        init.apply(Op.DELETE)
    for process in container.execs.values():
        if not process.exited:
            process.record_exit(UNKNOWN_EXIT)  # created, never started
    container.execs.clear()
    await _release(env, container)
    record = init.exit_record
    status = record.status if record is not None else UNKNOWN_EXIT
    stamp = record.timestamp() if record is not None else None
    event = events_pb2.TaskDelete(
        container_id=container.id,
        pid=container.pid,
        exit_status=status,
        exited_at=stamp,
        id=container.id,
    )
    env.publish(Topic.DELETE, event)
    return task_pb2.DeleteResponse(pid=container.pid, exit_status=status, exited_at=stamp)


async def _stop_created_init(env: TaskEnv, container: Container) -> None:
    """A created, never-started init: kill it and let its exit watch report the exit (bounded)."""
    init = container.init
    with contextlib.suppress(ShimError):
        await kill(env, container, init, signal.SIGKILL, True)
    try:
        await asyncio.wait_for(init.wait(), env.tuning.delete_exit_bound)
    except TimeoutError:
        init.log.warning("no exit %gs after SIGKILL", env.tuning.delete_exit_bound)
        await report_exit(env, container, init, UNKNOWN_EXIT)


async def _release(env: TaskEnv, container: Container) -> None:
    """Remove the container from the agent and the guest share, unmount its rootfs."""
    if not container.pod.dead:
        try:
            await remove_from_agent(container)
        except ShimError as exc:
            container.init.log.warning("RemoveContainer: %s", exc)
    await release_host(env, container)


async def remove_from_agent(container: Container) -> None:
    """RemoveContainer: the one way a container leaves the agent (Delete, a failed Create)."""
    await container.pod.agent.remove(container.id)


async def release_host(env: TaskEnv, container: Container) -> None:
    """Undo the host side: guest share, bundle rootfs mounts, exit fifo. Idempotent."""
    try:
        await container.pod.sandbox.unshare(container.id)
    except Exception:
        container.init.log.exception("unshare rootfs")
    if container.host_rootfs is not None and container.mounted_layers:
        layers, container.mounted_layers = container.mounted_layers, 0
        await unmount_rootfs(container.host_rootfs, layers)
    env.exit_fifos.close(container.id)


async def delete_exec(container: Container, process: Process) -> task_pb2.DeleteResponse:
    """Remove an exited (or never-started) exec's record; nothing is published."""
    async with process.lock:
        if process.state is ProcessState.DELETED:
            raise NotFound(f"process {process.exec_id} of task {container.id}: not found")
        if process.state is ProcessState.CREATED:
            process.record_exit(UNKNOWN_EXIT)
        process.apply(Op.DELETE)
    container.execs.pop(process.exec_id, None)
    record = process.exit_record
    assert record is not None  # DELETE is only reachable from STOPPED
    return task_pb2.DeleteResponse(
        pid=container.pid, exit_status=record.status, exited_at=record.timestamp()
    )


# stdio control ---------------------------------------------------------------------------
async def close_io(env: TaskEnv, process: Process) -> None:
    """CloseIO(stdin): forwarded bytes first, then CloseStdin; never hangs without stdin."""
    process.check(Op.CLOSE_IO)
    if process.pumps is None:
        process.stdin_close_requested = True
        return
    await process.pumps.close_stdin(env.tuning.closeio_timeout)


async def resize(
    env: TaskEnv, container: Container, process: Process, width: int, height: int
) -> None:
    """Size the process's tty. One that exited (or that the agent already reaped while its
    exit is being reported) has no tty left: a no-op, since a client racing the exit (ctr
    resizes right after Start) cannot know."""
    if process.pumps is None and process.spec is not None:  # exec not started yet
        process.spec.ConsoleSize.Width, process.spec.ConsoleSize.Height = width, height
        return
    if process.exited:
        return
    process.check(Op.RESIZE)
    try:
        await _resize(env, container, process, width, height)
    except NotFound as exc:
        process.log.debug("resize after the agent reaped the process: %s", exc)


async def _resize(
    env: TaskEnv, container: Container, process: Process, width: int, height: int
) -> None:
    await container.pod.agent.resize_tty(container.id, process.agent_exec_id, width, height)
