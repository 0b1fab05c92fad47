"""grpc.AgentService and grpc.Health for the agent: protobuf in, calls, protobuf out.

Thin by design: the sandbox's resources live in guest.sandbox, the
containers and their states in guest.containers (+ guest.states), process
calls in guest.process_calls, spec conversion in guest.bundle. RPCs not
implemented here answer Unimplemented through the generated base; any other
exception a handler raises becomes an error status in the ttrpc server (the
agent never dies of a bad request).
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from google.protobuf import empty_pb2

from kata_shim import __version__
from kata_shim.errors import InvalidArgument, Unavailable
from kata_shim.guest import bundle
from kata_shim.guest.containers import ContainerTable
from kata_shim.guest.network import NetworkRpcs
from kata_shim.guest.process_calls import ProcessCalls
from kata_shim.guest.states import Op
from kata_shim.guest.storage import StorageSpec
from kata_shim.proto import agent_pb2, health_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceBase
from kata_shim.proto.health_ttrpc import HealthBase
from kata_shim.ttrpc.service import RequestContext

__all__ = ["AgentService", "HealthService"]

log = logging.getLogger(__name__)

EMPTY = empty_pb2.Empty()
MAX_READ = 1 << 20  # bytes per ReadStdout/ReadStderr reply


def _storages(storages: object) -> list[StorageSpec]:
    return [
        StorageSpec(s.driver, s.source, s.fstype, s.mount_point, tuple(s.options))
        for s in storages  # type: ignore[attr-defined]
    ]


class HealthService(HealthBase):
    async def Check(
        self, ctx: RequestContext, request: health_pb2.CheckRequest
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Version(
        self, ctx: RequestContext, request: health_pb2.CheckRequest
    ) -> health_pb2.VersionCheckResponse:
        return health_pb2.VersionCheckResponse(grpc_version="ttrpc-1.1", agent_version=__version__)


class _BoundLifecycleRpc(Protocol):
    """A lifecycle RPC bound to its service: (ctx, request) like every handler."""

    def __call__(
        self, ctx: RequestContext, request: Any
    ) -> Coroutine[Any, Any, empty_pb2.Empty]: ...


class _LifecycleRpc(Protocol):
    """What `_lifecycle` builds: a function that binds, as a method, to (ctx, request)."""

    def __get__(self, service: Any, owner: Any = None) -> _BoundLifecycleRpc: ...


def _lifecycle(op: Op) -> _LifecycleRpc:
    """The handler of an RPC that only moves container `request.container_id` by `op`."""

    async def handler(self: AgentService, ctx: RequestContext, request: Any) -> empty_pb2.Empty:
        await self.containers.change(request.container_id, op)
        return EMPTY

    return handler


class AgentService(NetworkRpcs, AgentServiceBase):  # network RPCs: guest/network.py
    """grpc.AgentService over the sandbox, its container table and process calls."""

    def __init__(self, containers: ContainerTable) -> None:
        self.containers = containers
        self.sandbox = containers.sandbox
        self.processes = ProcessCalls(containers)

    # sandbox ------------------------------------------------------------------
    async def CreateSandbox(
        self, ctx: RequestContext, request: agent_pb2.CreateSandboxRequest
    ) -> empty_pb2.Empty:
        await self.sandbox.create(
            request.sandbox_id,
            _storages(request.storages),
            request.hostname,
            share_pid=request.sandbox_pidns,
        )
        return EMPTY

    async def DestroySandbox(
        self, ctx: RequestContext, request: agent_pb2.DestroySandboxRequest
    ) -> empty_pb2.Empty:
        await self.containers.remove_all()
        self.sandbox.destroy()
        return EMPTY

    # containers -------------------------------------------------------------
    #: a runc call and a state transition each (guest.states)
    StartContainer = _lifecycle(Op.START)
    PauseContainer = _lifecycle(Op.PAUSE)
    ResumeContainer = _lifecycle(Op.RESUME)

    async def CreateContainer(
        self, ctx: RequestContext, request: agent_pb2.CreateContainerRequest
    ) -> empty_pb2.Empty:
        if not request.HasField("OCI"):
            raise InvalidArgument("CreateContainer without an OCI spec")
        if request.devices:
            log.warning("[%s] device requests are not supported; ignored", request.container_id)
        storages = _storages(request.storages)
        await self.containers.create(
            request.container_id, request.OCI, storages, sandbox_pidns=request.sandbox_pidns
        )
        return EMPTY

    async def RemoveContainer(
        self, ctx: RequestContext, request: agent_pb2.RemoveContainerRequest
    ) -> empty_pb2.Empty:
        await self.containers.remove(request.container_id, request.timeout or None)
        return EMPTY

    async def UpdateContainer(
        self, ctx: RequestContext, request: agent_pb2.UpdateContainerRequest
    ) -> empty_pb2.Empty:
        resources = bundle.resources_config(request.resources)
        await self.containers.update(request.container_id, resources)
        return EMPTY

    async def StatsContainer(
        self, ctx: RequestContext, request: agent_pb2.StatsContainerRequest
    ) -> agent_pb2.StatsContainerResponse:
        return agent_pb2.StatsContainerResponse(
            cgroup_stats=self.containers.stats(request.container_id)
        )

    async def GetOOMEvent(
        self, ctx: RequestContext, request: agent_pb2.GetOOMEventRequest
    ) -> agent_pb2.OOMEvent:
        return agent_pb2.OOMEvent(container_id=await self.sandbox.oom_events.get())

    # processes --------------------------------------------------------------
    async def ExecProcess(
        self, ctx: RequestContext, request: agent_pb2.ExecProcessRequest
    ) -> empty_pb2.Empty:
        config = bundle.process_config(request.process)
        await self.processes.exec(request.container_id, request.exec_id, config)
        return EMPTY

    async def SignalProcess(
        self, ctx: RequestContext, request: agent_pb2.SignalProcessRequest
    ) -> empty_pb2.Empty:
        await self.processes.signal(request.container_id, request.exec_id, request.signal)
        return EMPTY

    async def WaitProcess(
        self, ctx: RequestContext, request: agent_pb2.WaitProcessRequest
    ) -> agent_pb2.WaitProcessResponse:
        code = await self.processes.wait(request.container_id, request.exec_id)
        return agent_pb2.WaitProcessResponse(status=code)

    # ReadStreamResponse.data is a zero-copy field (kata_shim.plugin.regen.ZERO_COPY): these
    # return the chunk itself, sent as it is; empty data (an empty reply) means EOF.
    async def ReadStdout(self, ctx: RequestContext, request: agent_pb2.ReadStreamRequest) -> bytes:
        return await self._read(request, stderr=False)

    async def ReadStderr(self, ctx: RequestContext, request: agent_pb2.ReadStreamRequest) -> bytes:
        return await self._read(request, stderr=True)

    async def _read(self, request: agent_pb2.ReadStreamRequest, stderr: bool) -> bytes:
        proc = self.containers.process(request.container_id, request.exec_id)
        stream = proc.output(stderr)
        if stream is None:  # no separate stderr with a terminal: EOF at once
            return b""
        return await stream.read(min(request.len or MAX_READ, MAX_READ))

    async def WriteStdin(
        self, ctx: RequestContext, request: agent_pb2.WriteStreamRequest
    ) -> agent_pb2.WriteStreamResponse:
        written = await self.processes.write_stdin(
            request.container_id, request.exec_id, request.data
        )
        return agent_pb2.WriteStreamResponse(len=written)

    async def CloseStdin(
        self, ctx: RequestContext, request: agent_pb2.CloseStdinRequest
    ) -> empty_pb2.Empty:
        self.processes.close_stdin(request.container_id, request.exec_id)
        return EMPTY

    async def TtyWinResize(
        self, ctx: RequestContext, request: agent_pb2.TtyWinResizeRequest
    ) -> empty_pb2.Empty:
        proc = self.containers.process(request.container_id, request.exec_id)
        if not proc.terminal:
            raise Unavailable("no tty")
        proc.resize(request.row, request.column)
        return EMPTY

    # guest --------------------------------------------------------------------
    async def GetGuestDetails(
        self, ctx: RequestContext, request: agent_pb2.GuestDetailsRequest
    ) -> agent_pb2.GuestDetailsResponse:
        details = agent_pb2.AgentDetails(version=__version__, init_daemon=False)
        return agent_pb2.GuestDetailsResponse(agent_details=details)
