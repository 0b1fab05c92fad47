"""AgentClient: every call the host makes to the guest agent, with intention-revealing names.

A typed wrapper over the generated `AgentServiceClient`. It owns, for the whole
host: building the `grpc.AgentService` requests, their deadlines
(`AgentTimeouts`; the long polls — WaitProcess, GetOOMEvent, stream reads and
stdin writes — have none) and the mapping of failures: the agent's own status
arrives as the matching ShimError (ttrpc), a broken transport becomes
Unavailable. Nothing here knows about tasks or pods; callers decide what an
error means for them. The stdio pumps (io/pumps.py) use `service` directly.
"""

from __future__ import annotations

import signal as signals
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from kata_shim.errors import Unavailable
from kata_shim.proto import agent_pb2, oci_pb2, types_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.ttrpc.client import Client

__all__ = ["AgentClient", "AgentTimeouts"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AgentTimeouts:
    """Deadlines of agent calls, in seconds."""

    #: ordinary RPCs (create, start, signal, exec, resize, pause, stats, networking, ...)
    rpc: float = 60.0
    #: RemoveContainer: sent to the agent (its bound for the processes to die, whole
    #: seconds); the call's own deadline is this plus `rpc`
    remove: int = 10
    #: DestroySandbox during teardown
    destroy: float = 10.0


async def _mapped(call: Awaitable[T]) -> T:
    """The one error mapping: ShimErrors pass unchanged, a transport OSError is Unavailable."""
    try:
        return await call
    except OSError as exc:
        raise Unavailable(f"agent connection: {exc}") from exc


class AgentClient:
    """The guest agent of one sandbox, over an established ttrpc connection."""

    def __init__(self, client: Client, timeouts: AgentTimeouts | None = None) -> None:
        self.timeouts = timeouts or AgentTimeouts()
        self._stub = AgentServiceClient(client)

    # sandbox ---------------------------------------------------------------------------
    async def create_sandbox(self, sandbox_id: str, hostname: str) -> None:
        request = agent_pb2.CreateSandboxRequest(hostname=hostname, sandbox_id=sandbox_id)
        await _mapped(self._stub.CreateSandbox(request, timeout=self.timeouts.rpc))

    async def destroy_sandbox(self) -> None:
        request = agent_pb2.DestroySandboxRequest()
        await _mapped(self._stub.DestroySandbox(request, timeout=self.timeouts.destroy))

    async def get_oom_event(self) -> str:
        """Long poll (no deadline): the id of the next container hit by an OOM kill."""
        reply = await _mapped(self._stub.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
        return reply.container_id

    # containers ------------------------------------------------------------------------
    async def create_container(
        self,
        cid: str,
        oci: oci_pb2.Spec,
        storages: Sequence[agent_pb2.Storage] = (),
        *,
        sandbox_pidns: bool = False,
    ) -> None:
        """CreateContainer; its init's agent exec id is the container id (as Kata's runtime);
        `sandbox_pidns`: in the pod's PID namespace."""
        request = agent_pb2.CreateContainerRequest(
            container_id=cid, exec_id=cid, OCI=oci, storages=storages, sandbox_pidns=sandbox_pidns
        )
        await _mapped(self._stub.CreateContainer(request, timeout=self.timeouts.rpc))

    async def start(self, cid: str) -> None:
        request = agent_pb2.StartContainerRequest(container_id=cid)
        await _mapped(self._stub.StartContainer(request, timeout=self.timeouts.rpc))

    async def remove(self, cid: str) -> None:
        """RemoveContainer: the agent kills what is left (bounded) and forgets the container."""
        remove = self.timeouts.remove
        request = agent_pb2.RemoveContainerRequest(container_id=cid, timeout=remove)
        await _mapped(self._stub.RemoveContainer(request, timeout=remove + self.timeouts.rpc))

    async def pause(self, cid: str) -> None:
        request = agent_pb2.PauseContainerRequest(container_id=cid)
        await _mapped(self._stub.PauseContainer(request, timeout=self.timeouts.rpc))

    async def resume(self, cid: str) -> None:
        request = agent_pb2.ResumeContainerRequest(container_id=cid)
        await _mapped(self._stub.ResumeContainer(request, timeout=self.timeouts.rpc))

    async def update_container(self, cid: str, resources: oci_pb2.LinuxResources) -> None:
        request = agent_pb2.UpdateContainerRequest(container_id=cid, resources=resources)
        await _mapped(self._stub.UpdateContainer(request, timeout=self.timeouts.rpc))

    async def stats(self, cid: str) -> agent_pb2.CgroupStats:
        request = agent_pb2.StatsContainerRequest(container_id=cid)
        reply = await _mapped(self._stub.StatsContainer(request, timeout=self.timeouts.rpc))
        return reply.cgroup_stats

    # processes -------------------------------------------------------------------------
    async def exec_process(self, cid: str, exec_id: str, process: oci_pb2.Process) -> None:
        request = agent_pb2.ExecProcessRequest(container_id=cid, exec_id=exec_id, process=process)
        await _mapped(self._stub.ExecProcess(request, timeout=self.timeouts.rpc))

    async def signal(self, cid: str, sig: int, *, exec_id: str | None = None) -> None:
        """Signal one process; `exec_id` None: the container (its init; for SIGKILL, all)."""
        request = agent_pb2.SignalProcessRequest(
            container_id=cid, exec_id=exec_id or "", signal=sig
        )
        await _mapped(self._stub.SignalProcess(request, timeout=self.timeouts.rpc))

    async def kill(self, cid: str, *, exec_id: str | None = None) -> None:
        """SIGKILL: the one way the host force-stops a process or a container."""
        await self.signal(cid, signals.SIGKILL, exec_id=exec_id)

    async def wait(self, cid: str, exec_id: str) -> int:
        """Long poll (no deadline): the process's exit status; the agent then drops it."""
        request = agent_pb2.WaitProcessRequest(container_id=cid, exec_id=exec_id)
        reply = await _mapped(self._stub.WaitProcess(request))
        return reply.status

    # stdio -----------------------------------------------------------------------------
    async def read_stream(
        self, cid: str, exec_id: str, size: int, *, stderr: bool = False
    ) -> memoryview:
        """One chunk of stdout (or stderr), empty at EOF; no deadline. A view of the reply
        frame: ReadStreamResponse.data is a zero-copy field (kata_shim.plugin.regen)."""
        request = agent_pb2.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=size)
        read = self._stub.ReadStderr if stderr else self._stub.ReadStdout
        return await _mapped(read(request))

    async def write_stdin(self, cid: str, exec_id: str, data: bytes) -> int:
        """Bytes the agent took (maybe fewer than given); no deadline: waits for the reader."""
        request = agent_pb2.WriteStreamRequest(container_id=cid, exec_id=exec_id, data=data)
        reply = await _mapped(self._stub.WriteStdin(request))
        return reply.len

    async def close_stdin(self, cid: str, exec_id: str) -> None:
        request = agent_pb2.CloseStdinRequest(container_id=cid, exec_id=exec_id)
        await _mapped(self._stub.CloseStdin(request, timeout=self.timeouts.rpc))

    async def resize_tty(self, cid: str, exec_id: str, width: int, height: int) -> None:
        request = agent_pb2.TtyWinResizeRequest(
            container_id=cid, exec_id=exec_id, row=height, column=width
        )
        await _mapped(self._stub.TtyWinResize(request, timeout=self.timeouts.rpc))

    # networking ------------------------------------------------------------------------
    async def update_interface(self, interface: types_pb2.Interface) -> types_pb2.Interface:
        """Configure one guest interface (by its MAC address); the agent's resulting view."""
        request = agent_pb2.UpdateInterfaceRequest(interface=interface)
        return await _mapped(self._stub.UpdateInterface(request, timeout=self.timeouts.rpc))

    async def update_routes(self, routes: Iterable[types_pb2.Route]) -> list[types_pb2.Route]:
        """Replace the guest's routes with `routes`; the routes it now has."""
        request = agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=routes))
        reply = await _mapped(self._stub.UpdateRoutes(request, timeout=self.timeouts.rpc))
        return list(reply.Routes)

    async def list_interfaces(self) -> list[types_pb2.Interface]:
        request = agent_pb2.ListInterfacesRequest()
        reply = await _mapped(self._stub.ListInterfaces(request, timeout=self.timeouts.rpc))
        return list(reply.Interfaces)

    async def list_routes(self) -> list[types_pb2.Route]:
        request = agent_pb2.ListRoutesRequest()
        reply = await _mapped(self._stub.ListRoutes(request, timeout=self.timeouts.rpc))
        return list(reply.Routes)

    async def add_arp_neighbors(self, neighbors: Iterable[types_pb2.ARPNeighbor]) -> None:
        request = agent_pb2.AddARPNeighborsRequest(
            neighbors=agent_pb2.ARPNeighbors(ARPNeighbors=neighbors)
        )
        await _mapped(self._stub.AddARPNeighbors(request, timeout=self.timeouts.rpc))
