"""AgentClient: the requests it builds, the deadlines it applies, the errors it maps —
first against a recording stand-in for the ttrpc Client, then over real ttrpc to FakeAgent."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from kata_shim import errors
from kata_shim.agent import AgentClient, AgentTimeouts
from kata_shim.proto import agent_pb2, oci_pb2, types_pb2
from kata_shim.ttrpc.client import Client
from tests.fakes.agent import FakeAgent, Program
from tests.fakes.agent_client import FakeAgentClient

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

TIMEOUTS = AgentTimeouts(rpc=7.0, remove=3, destroy=11.0)


class RecordingClient:
    """Stands in for ttrpc.Client: records (method, request, timeout), replies from `replies`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message, float | None]] = []
        self.replies: dict[str, Message] = {}
        self.zero_copy_replies: dict[str, memoryview] = {}
        self.error: BaseException | None = None

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[Message],
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Message:
        assert service == "grpc.AgentService"
        self.sent.append((method, request, timeout))
        if self.error is not None:
            raise self.error
        return self.replies.get(method) or response_type()

    async def call_zero_copy(
        self,
        service: str,
        method: str,
        request: Message,
        field: object,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> memoryview:
        assert service == "grpc.AgentService"
        self.sent.append((method, request, timeout))
        if self.error is not None:
            raise self.error
        return self.zero_copy_replies.get(method, memoryview(b""))


def recorded() -> tuple[AgentClient, RecordingClient]:
    stand_in = RecordingClient()
    return AgentClient(stand_in, TIMEOUTS), stand_in  # type: ignore[arg-type]


# requests and deadlines ------------------------------------------------------------------
async def test_container_calls_build_their_request_with_the_rpc_deadline() -> None:
    agent, sent = recorded()
    spec = oci_pb2.Spec(Hostname="h")
    await agent.create_container("c1", spec)
    await agent.start("c1")
    await agent.pause("c1")
    await agent.resume("c1")
    await agent.update_container("c1", oci_pb2.LinuxResources())
    await agent.exec_process("c1", "x1", oci_pb2.Process(Args=["sh"]))
    await agent.resize_tty("c1", "x1", 80, 24)
    await agent.close_stdin("c1", "x1")
    methods = [method for method, _, _ in sent.sent]
    assert methods == [
        "CreateContainer",
        "StartContainer",
        "PauseContainer",
        "ResumeContainer",
        "UpdateContainer",
        "ExecProcess",
        "TtyWinResize",
        "CloseStdin",
    ]
    assert {timeout for _, _, timeout in sent.sent} == {TIMEOUTS.rpc}
    create = sent.sent[0][1]
    assert isinstance(create, agent_pb2.CreateContainerRequest)
    assert (create.container_id, create.exec_id, create.OCI.Hostname) == ("c1", "c1", "h")
    resize = sent.sent[6][1]
    assert isinstance(resize, agent_pb2.TtyWinResizeRequest)
    assert (resize.exec_id, resize.column, resize.row) == ("x1", 80, 24)


async def test_kill_is_sigkill_to_the_container_or_one_exec() -> None:
    agent, sent = recorded()
    await agent.kill("c1")
    await agent.kill("c1", exec_id="x1")
    await agent.signal("c1", signal.SIGTERM, exec_id="x1")
    requests = [request for _, request, _ in sent.sent]
    assert all(isinstance(r, agent_pb2.SignalProcessRequest) for r in requests)
    fields = [(r.container_id, r.exec_id, r.signal) for r in requests]  # type: ignore[attr-defined]
    assert fields == [("c1", "", 9), ("c1", "x1", 9), ("c1", "x1", 15)]


async def test_remove_tells_the_agent_its_bound_and_waits_that_much_longer() -> None:
    agent, sent = recorded()
    await agent.remove("c1")
    [(method, request, timeout)] = sent.sent
    assert method == "RemoveContainer"
    assert isinstance(request, agent_pb2.RemoveContainerRequest)
    assert (request.container_id, request.timeout) == ("c1", TIMEOUTS.remove)
    assert timeout == TIMEOUTS.remove + TIMEOUTS.rpc


async def test_sandbox_calls() -> None:
    agent, sent = recorded()
    await agent.create_sandbox("sb", "host")
    await agent.destroy_sandbox()
    create = sent.sent[0][1]
    assert isinstance(create, agent_pb2.CreateSandboxRequest)
    assert (create.sandbox_id, create.hostname) == ("sb", "host")
    assert [(m, t) for m, _, t in sent.sent] == [
        ("CreateSandbox", TIMEOUTS.rpc),
        ("DestroySandbox", TIMEOUTS.destroy),
    ]


async def test_long_polls_have_no_deadline_and_return_the_payload() -> None:
    agent, sent = recorded()
    sent.replies = {
        "WaitProcess": agent_pb2.WaitProcessResponse(status=137),
        "GetOOMEvent": agent_pb2.OOMEvent(container_id="c9"),
        "WriteStdin": agent_pb2.WriteStreamResponse(len=2),
    }
    sent.zero_copy_replies = {"ReadStderr": memoryview(b"err")}  # a zero-copy field
    assert await agent.wait("c1", "x1") == 137
    assert await agent.get_oom_event() == "c9"
    assert await agent.write_stdin("c1", "x1", b"abc") == 2
    assert await agent.read_stream("c1", "x1", 4096, stderr=True) == b"err"
    assert [(m, t) for m, _, t in sent.sent] == [
        ("WaitProcess", None),
        ("GetOOMEvent", None),
        ("WriteStdin", None),
        ("ReadStderr", None),
    ]


async def test_stats_returns_the_cgroup_stats() -> None:
    agent, sent = recorded()
    reply = agent_pb2.StatsContainerResponse()
    reply.cgroup_stats.pids_stats.current = 5
    sent.replies["StatsContainer"] = reply
    assert (await agent.stats("c1")).pids_stats.current == 5
    assert sent.sent[0][2] == TIMEOUTS.rpc


# errors ------------------------------------------------------------------------------------
async def test_agent_errors_pass_unchanged() -> None:
    agent, sent = recorded()
    sent.error = errors.NotFound("process already exited")
    with pytest.raises(errors.NotFound, match=r"^process already exited$"):
        await agent.kill("c1")


async def test_a_broken_transport_is_unavailable() -> None:
    agent, sent = recorded()
    sent.error = BrokenPipeError(32, "Broken pipe")
    with pytest.raises(errors.Unavailable, match="Broken pipe"):
        await agent.start("c1")


# over ttrpc ------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def served(
    timeouts: AgentTimeouts = TIMEOUTS,
) -> AsyncIterator[tuple[AgentClient, FakeAgent]]:
    root = Path(tempfile.mkdtemp(prefix="ks-agentclient-", dir="/tmp"))
    fake = FakeAgent()
    await fake.serve(str(root / "agent.sock"))
    client = await Client.connect_unix(str(root / "agent.sock"), timeout=5)
    try:
        yield AgentClient(client, timeouts), fake
    finally:
        client.close()
        await client.wait_closed()
        await fake.shutdown()
        (root / "agent.sock").unlink(missing_ok=True)
        root.rmdir()


async def test_a_process_lifecycle_over_ttrpc() -> None:
    async with served() as (agent, fake):
        fake.programs["seven"] = Program(stdout=b"hi", exit_code=7)
        await agent.create_container("c1", oci_pb2.Spec(Process=oci_pb2.Process(Args=["seven"])))
        await agent.start("c1")
        assert await agent.read_stream("c1", "c1", 100) == b"hi"
        assert await agent.wait("c1", "c1") == 7
        with pytest.raises(errors.NotFound):
            await agent.kill("c1")
        await agent.remove("c1")
        assert fake.names() == [
            "CreateContainer",
            "StartContainer",
            "ReadStdout",
            "WaitProcess",
            "WaitProcess returned",
            "SignalProcess",
            "RemoveContainer",
        ]


async def test_the_rpc_deadline_applies_but_not_to_wait() -> None:
    async with served(AgentTimeouts(rpc=0.2)) as (agent, fake):
        fake.programs["slow"] = Program(runtime=0.6, exit_code=3)
        fake.delay["PauseContainer"] = 1.0
        await agent.create_container("c1", oci_pb2.Spec(Process=oci_pb2.Process(Args=["slow"])))
        await agent.start("c1")
        with pytest.raises(errors.DeadlineExceeded):
            await agent.pause("c1")
        assert await agent.wait("c1", "c1") == 3  # longer than the rpc deadline: none here


async def test_networking_over_ttrpc() -> None:
    async with served() as (agent, fake):
        eth0 = types_pb2.Interface(name="eth0", hwAddr="02:00:00:00:00:01", mtu=1500)
        assert (await agent.update_interface(eth0)).name == "eth0"
        route = types_pb2.Route(dest="0.0.0.0/0", gateway="10.0.0.1", device="eth0")
        assert [r.gateway for r in await agent.update_routes([route])] == ["10.0.0.1"]
        assert [i.mtu for i in await agent.list_interfaces()] == [1500]
        assert [r.device for r in await agent.list_routes()] == ["eth0"]
        neighbor = types_pb2.ARPNeighbor(device="eth0", lladdr="02:00:00:00:00:02")
        await agent.add_arp_neighbors([neighbor])
        assert [n.lladdr for n in fake.neighbors] == ["02:00:00:00:00:02"]


async def test_a_closed_connection_is_unavailable() -> None:
    async with served() as (agent, fake):
        await agent.list_routes()  # the server has the connection now
        fake.die()
        await asyncio.sleep(0.05)
        with pytest.raises(errors.Unavailable):
            await agent.start("c1")


# the fake -----------------------------------------------------------------------------------
async def test_the_fake_overrides_every_call() -> None:
    """A call the fake forgot would reach the real stub (which it does not have)."""

    def calls(cls: type[Any]) -> set[str]:
        return {
            name
            for name, member in vars(cls).items()
            if inspect.iscoroutinefunction(member) and not name.startswith("_")
        }

    assert calls(AgentClient) - {"kill"} == calls(FakeAgentClient)
