"""An in-process fake guest agent: a real AgentServiceBase served by our ttrpc Server.

Processes run scripted `Program`s chosen by their args[0] (`agent.programs`):
output to emit, an exit code, a run time (None = until signalled), stdin echo
(cat-like: exits at stdin EOF), ignored signals, and the old agents' habit of
reporting a bare signal number. `agent.calls` records every RPC (and stream
EOFs) in order, for ordering assertions. `die()` closes every connection, as
an agent (or its VM) dying does. `fail[rpc]` makes an RPC raise. Networking
RPCs keep the guest's interfaces, routes and ARP neighbours as lists.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from google.protobuf import empty_pb2

from kata_shim import errors
from kata_shim.proto import agent_pb2, health_pb2, oci_pb2, types_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceBase
from kata_shim.proto.health_ttrpc import HealthBase
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher, RequestContext

EMPTY = empty_pb2.Empty()


@dataclass
class Program:
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    runtime: float | None = 0.0  # seconds until it exits on its own; None = until signalled
    echo_stdin: bool = False  # stdout receives stdin; exits (exit_code) at stdin EOF
    ignore: frozenset[int] = frozenset()
    bare_signal_status: bool = False  # report 9, not 137, when SIGKILLed (old agents)


class _Stream:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.changed = asyncio.Event()

    def feed(self, data: bytes) -> None:
        self.buffer += data
        self.changed.set()

    def close(self) -> None:
        self.eof = True
        self.changed.set()

    async def read(self, n: int) -> bytes:
        while not self.buffer and not self.eof:
            self.changed.clear()
            await self.changed.wait()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


@dataclass(eq=False)
class FakeProc:
    container_id: str
    exec_id: str
    program: Program
    stdout: _Stream = field(default_factory=_Stream)
    stderr: _Stream = field(default_factory=_Stream)
    stdin: bytearray = field(default_factory=bytearray)
    stdin_closed: asyncio.Event = field(default_factory=asyncio.Event)
    signals: list[int] = field(default_factory=list)
    exited: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.runner = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        program = self.program
        self.stdout.feed(program.stdout)
        self.stderr.feed(program.stderr)
        if program.echo_stdin:
            await self.stdin_closed.wait()
        elif program.runtime is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(program.runtime)
        self.finish(program.exit_code)

    def finish(self, code: int) -> None:
        if self.exited.done():
            return
        self.exited.set_result(code)
        self.stdout.close()
        self.stderr.close()
        if self.runner is not None and self.runner is not asyncio.current_task():
            self.runner.cancel()

    def signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig == 0 or sig in self.program.ignore:
            return
        self.finish(sig if self.program.bare_signal_status else 128 + sig)


@dataclass(eq=False)
class FakeContainer:
    id: str
    spec: oci_pb2.Spec
    init: FakeProc
    status: str = "created"
    execs: dict[str, FakeProc] = field(default_factory=dict)
    sandbox_pidns: bool = False  # CreateContainer's flag: join the pod's PID namespace


class FakeHealth(HealthBase):
    async def Check(
        self, ctx: RequestContext, request: health_pb2.CheckRequest
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class FakeAgent(AgentServiceBase):
    def __init__(self) -> None:
        self.programs: dict[str, Program] = {}
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, ...]] = []
        self.fail: dict[str, errors.ShimError] = {}
        self.delay: dict[str, float] = {}  # sleep before the RPC acts
        self.after: dict[str, float] = {}  # sleep after it acted, before replying
        self.stats = agent_pb2.CgroupStats()
        self.oom_events: asyncio.Queue[str] = asyncio.Queue()
        self.max_stdin_write = 0  # >0: accept at most this many bytes per WriteStdin
        self.dead = False
        self.server: Server | None = None
        self.interfaces: list[types_pb2.Interface] = []  # networking: the guest's view
        self.routes: list[types_pb2.Route] = []
        self.neighbors: list[types_pb2.ARPNeighbor] = []

    # plumbing ------------------------------------------------------------------------
    async def serve(self, path: str) -> None:
        dispatcher = Dispatcher()
        dispatcher.register(AgentServiceBase.DESC, self)
        dispatcher.register(HealthBase.DESC, FakeHealth())
        self.server = Server(dispatcher)
        await self.server.serve_unix(path)

    def die(self) -> None:
        """The agent is gone: every connection closes, processes never report again."""
        self.dead = True
        if self.server is not None:
            self.server.close()

    async def shutdown(self) -> None:
        """`die()` and wait until the server's sockets are closed."""
        self.die()
        stop_all(self)
        if self.server is not None:
            await self.server.wait_closed()

    async def _enter(self, name: str, *detail: str) -> None:
        self.calls.append((name, *detail))
        if name in self.delay:
            await asyncio.sleep(self.delay[name])
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    def container(self, cid: str) -> FakeContainer:
        if cid not in self.containers:
            raise errors.NotFound(f"container {cid} not found")
        return self.containers[cid]

    def proc(self, cid: str, exec_id: str) -> FakeProc:
        container = self.container(cid)
        if exec_id in ("", cid):
            return container.init
        if exec_id not in container.execs:
            raise errors.NotFound(f"exec {exec_id} not found")
        return container.execs[exec_id]

    def program(self, args: list[str]) -> Program:
        return self.programs.get(args[0] if args else "", Program())

    # containers ----------------------------------------------------------------------
    async def CreateSandbox(self, ctx: RequestContext, request: agent_pb2.CreateSandboxRequest):
        await self._enter("CreateSandbox", request.sandbox_id)
        return EMPTY

    async def DestroySandbox(self, ctx: RequestContext, request: agent_pb2.DestroySandboxRequest):
        await self._enter("DestroySandbox")
        return EMPTY

    async def CreateContainer(self, ctx: RequestContext, request: agent_pb2.CreateContainerRequest):
        cid = request.container_id
        await self._enter("CreateContainer", cid)
        if cid in self.containers:
            raise errors.AlreadyExists(f"container {cid} exists")
        init = FakeProc(cid, cid, self.program(list(request.OCI.Process.Args)))
        self.containers[cid] = FakeContainer(
            cid, request.OCI, init, sandbox_pidns=request.sandbox_pidns
        )
        return EMPTY

    async def StartContainer(self, ctx: RequestContext, request: agent_pb2.StartContainerRequest):
        await self._enter("StartContainer", request.container_id)
        container = self.container(request.container_id)
        if container.status != "created" or container.init.exited.done():
            raise errors.FailedPrecondition(f"container {container.id} is {container.status}")
        container.status = "running"
        container.init.start()
        await asyncio.sleep(self.after.get("StartContainer", 0))
        return EMPTY

    async def ExecProcess(self, ctx: RequestContext, request: agent_pb2.ExecProcessRequest):
        await self._enter("ExecProcess", request.container_id, request.exec_id)
        container = self.container(request.container_id)
        if container.status not in ("running", "paused") or container.init.exited.done():
            raise errors.FailedPrecondition(f"container {container.id} is not running")
        proc = FakeProc(container.id, request.exec_id, self.program(list(request.process.Args)))
        container.execs[request.exec_id] = proc
        proc.start()
        await asyncio.sleep(self.after.get("ExecProcess", 0))
        return EMPTY

    async def SignalProcess(self, ctx: RequestContext, request: agent_pb2.SignalProcessRequest):
        cid, exec_id, sig = request.container_id, request.exec_id, request.signal
        await self._enter("SignalProcess", cid, exec_id, str(sig))
        container = self.container(cid)
        proc = self.proc(cid, exec_id)
        if proc.exited.done():
            raise errors.NotFound("process already exited")
        targets = [proc]
        if exec_id == "" and sig == 9:
            targets += list(container.execs.values())
        for target in targets:
            target.signal(sig)
        return EMPTY

    async def WaitProcess(self, ctx: RequestContext, request: agent_pb2.WaitProcessRequest):
        cid, exec_id = request.container_id, request.exec_id
        await self._enter("WaitProcess", cid, exec_id)
        proc = self.proc(cid, exec_id)
        code = await asyncio.shield(proc.exited)
        proc.stdout.close()
        proc.stderr.close()
        container = self.containers.get(cid)
        if container is not None and exec_id not in ("", cid):
            container.execs.pop(exec_id, None)
        self.calls.append(("WaitProcess returned", cid, exec_id, str(code)))
        return agent_pb2.WaitProcessResponse(status=code)

    async def RemoveContainer(self, ctx: RequestContext, request: agent_pb2.RemoveContainerRequest):
        await self._enter("RemoveContainer", request.container_id)
        container = self.container(request.container_id)
        for proc in [container.init, *container.execs.values()]:
            proc.finish(137)
        del self.containers[request.container_id]
        return EMPTY

    # stdio ---------------------------------------------------------------------------
    async def _read(self, request: agent_pb2.ReadStreamRequest, name: str):
        await self._enter(f"Read{name.capitalize()}", request.container_id, request.exec_id)
        proc = self.proc(request.container_id, request.exec_id)
        data = await getattr(proc, name).read(request.len or 32768)
        if not data:
            self.calls.append(("EOF", name, request.container_id, request.exec_id))
        return data  # ReadStreamResponse.data is a zero-copy field: the bytes themselves

    async def ReadStdout(self, ctx: RequestContext, request: agent_pb2.ReadStreamRequest):
        return await self._read(request, "stdout")

    async def ReadStderr(self, ctx: RequestContext, request: agent_pb2.ReadStreamRequest):
        return await self._read(request, "stderr")

    async def WriteStdin(self, ctx: RequestContext, request: agent_pb2.WriteStreamRequest):
        await self._enter(
            "WriteStdin", request.container_id, request.exec_id, str(len(request.data))
        )
        proc = self.proc(request.container_id, request.exec_id)
        if proc.stdin_closed.is_set():
            raise errors.FailedPrecondition("stdin closed")
        data = request.data[: self.max_stdin_write] if self.max_stdin_write else request.data
        proc.stdin += data
        if proc.program.echo_stdin:
            proc.stdout.feed(data)
        return agent_pb2.WriteStreamResponse(len=len(data))

    async def CloseStdin(self, ctx: RequestContext, request: agent_pb2.CloseStdinRequest):
        await self._enter("CloseStdin", request.container_id, request.exec_id)
        self.proc(request.container_id, request.exec_id).stdin_closed.set()
        return EMPTY

    async def TtyWinResize(self, ctx: RequestContext, request: agent_pb2.TtyWinResizeRequest):
        detail = (request.container_id, request.exec_id, str(request.row), str(request.column))
        await self._enter("TtyWinResize", *detail)
        self.proc(request.container_id, request.exec_id)
        return EMPTY

    # container-wide -------------------------------------------------------------------
    async def PauseContainer(self, ctx: RequestContext, request: agent_pb2.PauseContainerRequest):
        await self._enter("PauseContainer", request.container_id)
        self.container(request.container_id).status = "paused"
        return EMPTY

    async def ResumeContainer(self, ctx: RequestContext, request: agent_pb2.ResumeContainerRequest):
        await self._enter("ResumeContainer", request.container_id)
        self.container(request.container_id).status = "running"
        return EMPTY

    async def UpdateContainer(self, ctx: RequestContext, request: agent_pb2.UpdateContainerRequest):
        await self._enter("UpdateContainer", request.container_id)
        self.last_update = request
        return EMPTY

    async def StatsContainer(self, ctx: RequestContext, request: agent_pb2.StatsContainerRequest):
        await self._enter("StatsContainer", request.container_id)
        self.container(request.container_id)
        return agent_pb2.StatsContainerResponse(cgroup_stats=self.stats)

    async def GetOOMEvent(self, ctx: RequestContext, request: agent_pb2.GetOOMEventRequest):
        return agent_pb2.OOMEvent(container_id=await self.oom_events.get())

    # networking -----------------------------------------------------------------------
    async def UpdateInterface(self, ctx: RequestContext, request: agent_pb2.UpdateInterfaceRequest):
        await self._enter("UpdateInterface", request.interface.name)
        self.interfaces = [i for i in self.interfaces if i.hwAddr != request.interface.hwAddr]
        self.interfaces.append(request.interface)
        return request.interface

    async def UpdateRoutes(self, ctx: RequestContext, request: agent_pb2.UpdateRoutesRequest):
        await self._enter("UpdateRoutes", str(len(request.routes.Routes)))
        self.routes = list(request.routes.Routes)
        return agent_pb2.Routes(Routes=self.routes)

    async def ListInterfaces(self, ctx: RequestContext, request: agent_pb2.ListInterfacesRequest):
        await self._enter("ListInterfaces")
        return agent_pb2.Interfaces(Interfaces=self.interfaces)

    async def ListRoutes(self, ctx: RequestContext, request: agent_pb2.ListRoutesRequest):
        await self._enter("ListRoutes")
        return agent_pb2.Routes(Routes=self.routes)

    async def AddARPNeighbors(self, ctx: RequestContext, request: agent_pb2.AddARPNeighborsRequest):
        await self._enter("AddARPNeighbors", str(len(request.neighbors.ARPNeighbors)))
        self.neighbors.extend(request.neighbors.ARPNeighbors)
        return EMPTY


def stop_all(agent: FakeAgent) -> None:
    """Cancel every fake process's runner (end of test)."""
    for container in agent.containers.values():
        for proc in [container.init, *container.execs.values()]:
            if proc.runner is not None:
                with contextlib.suppress(Exception):
                    proc.runner.cancel()
