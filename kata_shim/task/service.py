"""containerd.task.v2.Task for VM sandboxes: validation, lookup and delegation.

The 17 RPCs with containerd's semantics and error classes (contract §3.2):
unknown ids → NotFound, wrong state → FailedPrecondition (from the process
state machine), bad payloads → InvalidArgument, Checkpoint → Unimplemented.
Behaviour lives in lifecycle.py / create.py / exitwatch.py; what differs
between clients (containerd, iSulad's lib-shim-v2) in the injected
ClientProfile (profile.py); this class owns the task table and the pods.
Rules: handlers never hold a lock across sandbox teardown; Connect and State
are lock-free; every pid reported (tasks and execs alike) is the sandbox's pid
(Kata: the hypervisor's).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable

from google.protobuf import empty_pb2

from kata_shim import __version__
from kata_shim.errors import AlreadyExists, InvalidArgument, NotFound, Unimplemented
from kata_shim.events.publisher import Publisher
from kata_shim.ids import identifier_problem
from kata_shim.process.process import Process, Stdio
from kata_shim.process.states import Op, status_of
from kata_shim.proto import events_pb2, task_pb2, task_types_pb2
from kata_shim.proto.task_ttrpc import TaskBase
from kata_shim.sandbox.base import SandboxProvider
from kata_shim.sandbox.owners import owners_of_user
from kata_shim.sandbox.podcgroup import spec_cgroups_path
from kata_shim.sandbox.sizing import SizingRequest
from kata_shim.task import lifecycle
from kata_shim.task.containers import Container, TaskEnv, Topic
from kata_shim.task.create import create_container
from kata_shim.task.exitwatch import abort_pod_processes
from kata_shim.task.observer import TaskObserver
from kata_shim.task.pod import Pod
from kata_shim.task.pods import PodRegistry
from kata_shim.task.profile import ClientProfile
from kata_shim.task.spec import (
    Role,
    config_path,
    exec_process,
    linux_resources,
    load_bundle_spec,
    placement,
    pod_network,
)
from kata_shim.task.tuning import Tuning
from kata_shim.ttrpc.service import RequestContext, inline

__all__ = ["TaskService"]

log = logging.getLogger(__name__)

EMPTY = empty_pb2.Empty()
#: called once, at the first Create, with its options' config_path: this shim's sandboxes
ProviderLoader = Callable[[str | None], SandboxProvider]


class TaskService(TaskBase):
    """The shim's Task service; one instance per shim process (one pod)."""

    def __init__(
        self,
        *,
        namespace: str,
        publisher: Publisher,
        provider_loader: ProviderLoader,
        on_shutdown: Callable[[], None],
        shim_pid: int | None = None,
        tuning: Tuning | None = None,
        profile: ClientProfile | None = None,
        observer: TaskObserver | None = None,
    ) -> None:
        observer = observer or TaskObserver()
        #: what differs between containerd and iSulad's lib-shim-v2 (profile.py)
        self._profile = profile or ClientProfile()
        tuning = tuning or Tuning()
        self.env = TaskEnv(namespace, publisher, tuning, self._profile.exit_fifos, observer)
        self._profile.bind(tuning, self._idle)
        self._on_shutdown = on_shutdown
        self._provider_loader = provider_loader
        self._provider: SandboxProvider | None = None  # loaded once, at the first Create
        self._shim_pid = shim_pid or os.getpid()
        self._containers: dict[str, Container] = {}  # event loop, await-free mutations
        self._creating: set[str] = set()  # ids whose Create is in flight
        self._pods = PodRegistry(self.env.tuning, self._pod_died, self._oom, observer)
        self._shutdown_task: asyncio.Task[None] | None = None  # Shutdown's teardown-then-exit

    # lookups ---------------------------------------------------------------------------
    def _container(self, container_id: str) -> Container:
        found = self._containers.get(container_id)
        if found is None:
            raise NotFound(f"task {container_id}: not found")
        return found

    def _process(self, container_id: str, exec_id: str) -> tuple[Container, Process]:
        container = self._container(container_id)
        return container, container.process(exec_id)

    def process_states(self) -> list[tuple[bool, str]]:
        """(is an init, reported state) of every process, for the tasks-by-state metric."""
        return [
            (process.is_init, container.reported_state(process).value)
            for container in self._containers.values()
            for process in container.processes()
        ]

    def _pod_died(self, pod: Pod) -> None:
        abort_pod_processes(self.env, [c for c in self._containers.values() if c.pod is pod])

    def _oom(self, container_id: str) -> None:
        if container_id in self._containers:
            self.env.publish(Topic.OOM, events_pb2.TaskOOM(container_id=container_id))

    # create ----------------------------------------------------------------------------
    async def Create(
        self, ctx: RequestContext, request: task_pb2.CreateTaskRequest
    ) -> task_pb2.CreateTaskResponse:
        cid = request.id
        if problem := identifier_problem(cid):  # the id becomes a state dir name
            raise InvalidArgument(f"task id {problem}")
        if not os.path.isabs(request.bundle):  # relative: the shim's cwd, another task's bundle
            raise InvalidArgument(f"bundle must be an absolute path, not {request.bundle!r}")
        if cid in self._containers or cid in self._creating:
            raise AlreadyExists(f"task {cid}: already exists")
        self._creating.add(cid)
        self._profile.create_began()
        try:
            container = await self._create(request)
        finally:
            self._creating.discard(cid)
            self._profile.create_ended(idle=not self._containers and not self._creating)
        return task_pb2.CreateTaskResponse(pid=container.pid)

    def _idle(self) -> None:
        if self._containers or self._creating or self._shutdown_task is not None:
            return
        log.info("no task %gs after a failed Create: exiting", self.env.tuning.idle_exit_delay)
        self._shutdown_task = asyncio.get_running_loop().create_task(self._finish())

    async def _create(self, request: task_pb2.CreateTaskRequest) -> Container:
        spec = load_bundle_spec(request.bundle)
        provider = self._load_provider(request)
        where = placement(request.id, spec.get("annotations") or {})
        stdio = Stdio(request.stdin, request.stdout, request.stderr, request.terminal)
        init = Process(request.id, "", request.id, stdio)
        async with init.lock:  # the init's exit is queued after TaskCreate
            hostname, network = spec.get("hostname", ""), pod_network(spec)
            cgroups_path = spec_cgroups_path(spec)  # the pod's host cgroup (sandbox_cgroup_only)
            sizing = SizingRequest.from_annotations(spec.get("annotations") or {})
            pod = await self._pods.acquire(
                where, provider, hostname, request.id, network, sizing, cgroups_path=cgroups_path
            )
            try:
                container = await create_container(self.env, request, spec, pod, init)
            except BaseException:
                self._pods.release(pod, request.id)
                raise
            self._containers[request.id] = container
            if where.role is Role.SANDBOX:
                container.siblings = self._siblings_of(container)
            self.env.publish(Topic.CREATE, self._create_event(request, container))
        return container

    def _siblings_of(self, sandbox: Container) -> Callable[[], list[Container]]:
        def siblings() -> list[Container]:
            pod = sandbox.pod
            return [c for c in self._containers.values() if c.pod is pod and c is not sandbox]

        return siblings

    def _load_provider(self, request: task_pb2.CreateTaskRequest) -> SandboxProvider:
        if self._provider is None:
            options = request.options if request.HasField("options") else None
            self._provider = self._provider_loader(config_path(options))
        return self._provider

    @staticmethod
    def _create_event(
        request: task_pb2.CreateTaskRequest, container: Container
    ) -> events_pb2.TaskCreate:
        io = events_pb2.TaskIO(
            stdin=request.stdin,
            stdout=request.stdout,
            stderr=request.stderr,
            terminal=request.terminal,
        )
        return events_pb2.TaskCreate(
            container_id=request.id,
            bundle=request.bundle,
            rootfs=request.rootfs,
            io=io,
            checkpoint=request.checkpoint,
            pid=container.pid,
        )

    # process lifecycle -----------------------------------------------------------------
    async def Start(
        self, ctx: RequestContext, request: task_pb2.StartRequest
    ) -> task_pb2.StartResponse:
        container, process = self._process(request.id, request.exec_id)
        if process.is_init:
            pid = await lifecycle.start_init(self.env, container)
        else:
            pid = await self._profile.start_exec(self.env, container, process)
        return task_pb2.StartResponse(pid=pid)

    async def Wait(
        self, ctx: RequestContext, request: task_pb2.WaitRequest
    ) -> task_pb2.WaitResponse:
        _, process = self._process(request.id, request.exec_id)
        record = await process.wait()
        return task_pb2.WaitResponse(exit_status=record.status, exited_at=record.timestamp())

    @inline
    async def State(
        self, ctx: RequestContext, request: task_pb2.StateRequest
    ) -> task_pb2.StateResponse:
        container, process = self._process(request.id, request.exec_id)
        started = process.is_init or process.pumps is not None
        reply = task_pb2.StateResponse(
            id=container.id,
            bundle=container.bundle,
            pid=container.pid if started else 0,
            status=status_of(container.reported_state(process)),  # type: ignore[arg-type]
            stdin=process.stdio.stdin,
            stdout=process.stdio.stdout,
            stderr=process.stdio.stderr,
            terminal=process.stdio.terminal,
            exec_id=process.exec_id,
        )
        record = process.exit_record
        if record is not None:
            reply.exit_status = record.status
            reply.exited_at.CopyFrom(record.timestamp())
        return reply

    async def Kill(self, ctx: RequestContext, request: task_pb2.KillRequest) -> empty_pb2.Empty:
        container, process = self._process(request.id, request.exec_id)
        await lifecycle.kill(self.env, container, process, request.signal, request.all)
        return EMPTY

    async def Delete(
        self, ctx: RequestContext, request: task_pb2.DeleteRequest
    ) -> task_pb2.DeleteResponse:
        container, process = self._process(request.id, request.exec_id)
        if not process.is_init:
            return await lifecycle.delete_exec(container, process)
        reply = await lifecycle.delete_init(self.env, container)
        if self._containers.get(container.id) is container:
            del self._containers[container.id]
        self._pods.release(container.pod, container.id)
        return reply

    async def Exec(
        self, ctx: RequestContext, request: task_pb2.ExecProcessRequest
    ) -> empty_pb2.Empty:
        container = self._container(request.id)
        if problem := identifier_problem(request.exec_id):
            raise InvalidArgument(f"exec id {problem}")
        if request.exec_id in container.execs:
            raise AlreadyExists(f"id {request.exec_id}")
        container.init.check(Op.EXEC)
        spec = exec_process(request.spec, request.terminal)
        stdio = Stdio(request.stdin, request.stdout, request.stderr, spec.Terminal)
        process = Process(container.id, request.exec_id, uuid.uuid4().hex, stdio)
        process.spec = spec
        user = spec.User
        container.pod.sandbox.allow_owners(owners_of_user(user.UID, user.GID, user.AdditionalGids))
        container.execs[request.exec_id] = process
        event = events_pb2.TaskExecAdded(container_id=container.id, exec_id=request.exec_id)
        self.env.publish(Topic.EXEC_ADDED, event)
        return EMPTY

    # stdio -----------------------------------------------------------------------------
    async def ResizePty(
        self, ctx: RequestContext, request: task_pb2.ResizePtyRequest
    ) -> empty_pb2.Empty:
        container, process = self._process(request.id, request.exec_id)
        await lifecycle.resize(self.env, container, process, request.width, request.height)
        return EMPTY

    async def CloseIO(
        self, ctx: RequestContext, request: task_pb2.CloseIORequest
    ) -> empty_pb2.Empty:
        _, process = self._process(request.id, request.exec_id)
        if request.stdin:
            await lifecycle.close_io(self.env, process)
        return EMPTY

    # container-wide ----------------------------------------------------------------------
    @inline
    async def Pids(
        self, ctx: RequestContext, request: task_pb2.PidsRequest
    ) -> task_pb2.PidsResponse:
        container = self._container(request.id)
        return task_pb2.PidsResponse(processes=[task_types_pb2.ProcessInfo(pid=container.pid)])

    async def Pause(self, ctx: RequestContext, request: task_pb2.PauseRequest) -> empty_pb2.Empty:
        await lifecycle.pause(self.env, self._container(request.id))
        return EMPTY

    async def Resume(self, ctx: RequestContext, request: task_pb2.ResumeRequest) -> empty_pb2.Empty:
        await lifecycle.resume(self.env, self._container(request.id))
        return EMPTY

    async def Update(
        self, ctx: RequestContext, request: task_pb2.UpdateTaskRequest
    ) -> empty_pb2.Empty:
        container = self._container(request.id)
        container.init.check(Op.UPDATE)
        resources = linux_resources(request.resources)
        await container.pod.agent.update_container(container.id, resources)
        return EMPTY

    async def Stats(
        self, ctx: RequestContext, request: task_pb2.StatsRequest
    ) -> task_pb2.StatsResponse:
        container = self._container(request.id)
        stats = await container.pod.agent.stats(container.id)
        return task_pb2.StatsResponse(stats=self._profile.stats(stats))

    async def Checkpoint(
        self, ctx: RequestContext, request: task_pb2.CheckpointTaskRequest
    ) -> empty_pb2.Empty:
        raise Unimplemented("checkpoint is not supported by this runtime")

    # shim --------------------------------------------------------------------------------
    @inline
    async def Connect(
        self, ctx: RequestContext, request: task_pb2.ConnectRequest
    ) -> task_pb2.ConnectResponse:
        container = self._containers.get(request.id)
        return task_pb2.ConnectResponse(
            shim_pid=self._shim_pid,
            task_pid=container.pid if container is not None else 0,
            version=__version__,
        )

    async def Shutdown(
        self, ctx: RequestContext, request: task_pb2.ShutdownRequest
    ) -> empty_pb2.Empty:
        if self._containers or self._creating:
            return EMPTY
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.get_running_loop().create_task(self._finish())
        if self._profile.shutdown_waits_for_teardown:
            # shielded: a client that gives up closes the connection, which cancels this
            # handler — the shim must still finish tearing down and exit.
            await asyncio.shield(self._shutdown_task)
        return EMPTY

    async def _finish(self) -> None:
        """Wait (bounded) for sandbox teardowns, then ask the caller to exit, once."""
        await self._pods.wait_teardowns(self.env.tuning.teardown_timeout)
        if self._containers or self._creating:  # a Create arrived meanwhile: keep serving
            self._shutdown_task = None
            return
        self._on_shutdown()

    async def close(self) -> None:
        """Tear everything down (SIGTERM path): running processes exit 255, sandboxes stop."""
        containers = list(self._containers.values())
        self._profile.close()
        for pod in self._pods:
            pod.mark_dead("shim closing", logging.INFO)
        watches = {
            p.exit_watch for c in containers for p in c.processes() if p.exit_watch is not None
        }
        if watches:
            _, late = await asyncio.wait(watches, timeout=self.env.tuning.drain_abandon)
            for watch in late:
                watch.cancel()
        await self._pods.close(self.env.tuning.teardown_timeout)
        for container in containers:
            await lifecycle.release_host(self.env, container)
