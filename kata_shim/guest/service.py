"""grpc.AgentService and grpc.Health for the agent: protobuf in, manager calls, protobuf out.

Thin by design: validation and state live in ContainerManager. RPCs not
implemented here answer Unimplemented through the generated base.
"""

from __future__ import annotations

import logging

from google.protobuf import empty_pb2

from kata_shim import __version__, oci
from kata_shim.errors import InvalidArgument
from kata_shim.guest.containers import ContainerManager
from kata_shim.proto import agent_pb2, health_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceBase
from kata_shim.proto.health_ttrpc import HealthBase
from kata_shim.ttrpc.service import RequestContext

__all__ = ["AgentService", "HealthService"]

log = logging.getLogger(__name__)

EMPTY = empty_pb2.Empty()
MAX_READ = 1 << 20


class HealthService(HealthBase):
    async def Check(
        self, ctx: RequestContext, request: health_pb2.CheckRequest
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Version(
        self, ctx: RequestContext, request: health_pb2.CheckRequest
    ) -> health_pb2.VersionCheckResponse:
        return health_pb2.VersionCheckResponse(grpc_version="ttrpc-1.1", agent_version=__version__)


class AgentService(AgentServiceBase):
    def __init__(self, manager: ContainerManager) -> None:
        self.m = manager

    async def CreateSandbox(
        self, ctx: RequestContext, request: agent_pb2.CreateSandboxRequest
    ) -> empty_pb2.Empty:
        self.m.sandbox_id = request.sandbox_id
        for storage in request.storages:
            await self.m.mount_storage(
                storage.source, storage.mount_point, storage.fstype, list(storage.options)
            )
        log.info("sandbox %s created (%d storages)", request.sandbox_id, len(request.storages))
        return EMPTY

    async def DestroySandbox(
        self, ctx: RequestContext, request: agent_pb2.DestroySandboxRequest
    ) -> empty_pb2.Empty:
        await self.m.destroy()
        return EMPTY

    async def CreateContainer(
        self, ctx: RequestContext, request: agent_pb2.CreateContainerRequest
    ) -> empty_pb2.Empty:
        if not request.HasField("OCI"):
            raise InvalidArgument("CreateContainer without an OCI spec")
        for storage in request.storages:
            await self.m.mount_storage(
                storage.source, storage.mount_point, storage.fstype, list(storage.options)
            )
        await self.m.create(request.container_id, oci.spec_to_json(request.OCI))
        return EMPTY

    async def StartContainer(
        self, ctx: RequestContext, request: agent_pb2.StartContainerRequest
    ) -> empty_pb2.Empty:
        await self.m.start(request.container_id)
        return EMPTY

    async def RemoveContainer(
        self, ctx: RequestContext, request: agent_pb2.RemoveContainerRequest
    ) -> empty_pb2.Empty:
        await self.m.remove(request.container_id, request.timeout or None)
        return EMPTY

    async def ExecProcess(
        self, ctx: RequestContext, request: agent_pb2.ExecProcessRequest
    ) -> empty_pb2.Empty:
        if not request.exec_id:
            raise InvalidArgument("ExecProcess needs an exec id")
        await self.m.exec(
            request.container_id, request.exec_id, oci.process_to_json(request.process)
        )
        return EMPTY

    async def SignalProcess(
        self, ctx: RequestContext, request: agent_pb2.SignalProcessRequest
    ) -> empty_pb2.Empty:
        await self.m.signal(request.container_id, request.exec_id, request.signal)
        return EMPTY

    async def WaitProcess(
        self, ctx: RequestContext, request: agent_pb2.WaitProcessRequest
    ) -> agent_pb2.WaitProcessResponse:
        code = await self.m.wait(request.container_id, request.exec_id)
        return agent_pb2.WaitProcessResponse(status=code)

    async def ReadStdout(
        self, ctx: RequestContext, request: agent_pb2.ReadStreamRequest
    ) -> agent_pb2.ReadStreamResponse:
        return await self._read(request, stderr=False)

    async def ReadStderr(
        self, ctx: RequestContext, request: agent_pb2.ReadStreamRequest
    ) -> agent_pb2.ReadStreamResponse:
        return await self._read(request, stderr=True)

    async def _read(
        self, request: agent_pb2.ReadStreamRequest, stderr: bool
    ) -> agent_pb2.ReadStreamResponse:
        stream = self.m.output(request.container_id, request.exec_id, stderr)
        if stream is None:  # no separate stderr with a terminal
            return agent_pb2.ReadStreamResponse()
        data = await stream.read(min(request.len or MAX_READ, MAX_READ))
        return agent_pb2.ReadStreamResponse(data=data)

    async def WriteStdin(
        self, ctx: RequestContext, request: agent_pb2.WriteStreamRequest
    ) -> agent_pb2.WriteStreamResponse:
        written = await self.m.write_stdin(request.container_id, request.exec_id, request.data)
        return agent_pb2.WriteStreamResponse(len=written)

    async def CloseStdin(
        self, ctx: RequestContext, request: agent_pb2.CloseStdinRequest
    ) -> empty_pb2.Empty:
        await self.m.close_stdin(request.container_id, request.exec_id)
        return EMPTY

    async def TtyWinResize(
        self, ctx: RequestContext, request: agent_pb2.TtyWinResizeRequest
    ) -> empty_pb2.Empty:
        self.m.resize(request.container_id, request.exec_id, request.row, request.column)
        return EMPTY

    async def PauseContainer(
        self, ctx: RequestContext, request: agent_pb2.PauseContainerRequest
    ) -> empty_pb2.Empty:
        await self.m.pause(request.container_id)
        return EMPTY

    async def ResumeContainer(
        self, ctx: RequestContext, request: agent_pb2.ResumeContainerRequest
    ) -> empty_pb2.Empty:
        await self.m.resume(request.container_id)
        return EMPTY

    async def UpdateContainer(
        self, ctx: RequestContext, request: agent_pb2.UpdateContainerRequest
    ) -> empty_pb2.Empty:
        await self.m.update(request.container_id, oci.resources_to_json(request.resources))
        return EMPTY

    async def StatsContainer(
        self, ctx: RequestContext, request: agent_pb2.StatsContainerRequest
    ) -> agent_pb2.StatsContainerResponse:
        return agent_pb2.StatsContainerResponse(cgroup_stats=self.m.stats(request.container_id))

    async def GetOOMEvent(
        self, ctx: RequestContext, request: agent_pb2.GetOOMEventRequest
    ) -> agent_pb2.OOMEvent:
        return agent_pb2.OOMEvent(container_id=await self.m.oom_events.get())

    async def GetGuestDetails(
        self, ctx: RequestContext, request: agent_pb2.GuestDetailsRequest
    ) -> agent_pb2.GuestDetailsResponse:
        details = agent_pb2.AgentDetails(version=__version__, init_daemon=False)
        return agent_pb2.GuestDetailsResponse(agent_details=details)
