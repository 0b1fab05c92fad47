"""FakeSandbox: the Sandbox ABC over an in-process FakeAgent (no VM, no processes).

`start` serves the fake agent on a unix socket in the sandbox's state dir;
`crash()` makes `wait()` resolve (the VM died) and, by default, kills the
agent's connections too; `stop` can be made slow (`stop_delay`) to check that
nothing waits for teardown. `SandboxFarm` is the `SandboxProvider` a
TaskService gets (`provider_loader=farm.load`): one FakeSandbox (and FakeAgent)
per sandbox id.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from pathlib import Path

from kata_shim.agent.client import AgentClient
from kata_shim.errors import Unavailable
from kata_shim.sandbox.base import PodNetworkRequest, Sandbox, SandboxSpec
from kata_shim.sandbox.dial import UnixAddress
from kata_shim.sandbox.owners import Owners
from kata_shim.ttrpc.client import Client
from tests.fakes.agent import FakeAgent, Program, stop_all

_PIDS = itertools.count(40000)
GUEST_SHARE = "/run/kata-containers/shared/containers"


class FakeSandbox(Sandbox):
    backend = "fake"

    def __init__(self, spec: SandboxSpec, agent: FakeAgent | None = None) -> None:
        super().__init__(spec)
        self.agent = agent or FakeAgent()
        self.socket = spec.state_dir / "agent.sock"
        self.events: list[str] = []
        self.shared: dict[str, Path] = {}
        self.readonly: dict[str, bool] = {}
        self.clients: list[Client] = []
        self.stop_delay = 0.0
        self.fail_start: Exception | None = None
        self._pid = 0
        self._died: asyncio.Future[int] | None = None
        self.network: PodNetworkRequest | None = None  # what use_network was given
        self.network_events: list[str] = []  # use_network/start/configure order
        self.owners = Owners()  # what allow_owners was given, together
        self.owner_calls: list[tuple[Owners, list[str]]] = []  # (owners, events before it)

    @property
    def pid(self) -> int:
        return self._pid

    def _died_future(self) -> asyncio.Future[int]:
        if self._died is None:
            self._died = asyncio.get_running_loop().create_future()
        return self._died

    def use_network(self, request: PodNetworkRequest) -> None:
        self.network = request
        self.network_events.append(f"use {request.netns}")

    async def configure_guest_network(self, agent: AgentClient) -> None:
        calls = ",".join(self.agent.names())
        self.network_events.append(f"configure (agent calls so far: {calls or 'none'})")

    async def start(self) -> None:
        self.network_events.append("start")
        self.events.append("start")
        if self.fail_start is not None:
            raise self.fail_start
        self.spec.state_dir.mkdir(parents=True, exist_ok=True)
        await self.agent.serve(str(self.socket))
        self._pid = next(_PIDS)

    def agent_address(self) -> UnixAddress:
        return UnixAddress(self.socket)

    async def connect_agent(self) -> Client:
        if self.agent.dead:
            raise Unavailable("agent is dead")
        client = await Client.connect_unix(str(self.socket), timeout=5)
        self.clients.append(client)
        return client

    async def share(
        self, container_id: str, name: str, host_path: Path, *, readonly: bool = False
    ) -> str:
        self.events.append(f"share {container_id}" + ("" if name == "rootfs" else f" {name}"))
        self.readonly[f"{container_id}/{name}"] = readonly
        self.shared[f"{container_id}/{name}"] = host_path
        return f"{GUEST_SHARE}/{container_id}/{name}"

    def allow_owners(self, owners: Owners) -> None:
        self.owners = self.owners | owners
        self.owner_calls.append((owners, list(self.events)))

    async def unshare(self, container_id: str) -> None:
        self.events.append(f"unshare {container_id}")
        for key in [k for k in self.shared if k.startswith(f"{container_id}/")]:
            del self.shared[key]

    async def wait(self) -> int:
        return await asyncio.shield(self._died_future())

    def crash(self, status: int = 137, close_agent: bool = True) -> None:
        """The VM died. With close_agent=False the agent connection stays (hung transport)."""
        self.events.append("crash")
        if close_agent:
            self.agent.die()
        if not self._died_future().done():
            self._died_future().set_result(status)

    async def stop(self, timeout: float = 10.0) -> None:
        self.events.append("stop")
        await asyncio.sleep(self.stop_delay)
        self.agent.die()
        stop_all(self.agent)
        if not self._died_future().done():
            self._died_future().set_result(0)
        self.events.append("stopped")

    async def cleanup(self) -> None:
        self.events.append("cleanup")
        for client in self.clients:
            client.close()
        shutil.rmtree(self.spec.state_dir, ignore_errors=True)


class SandboxFarm:
    """A SandboxProvider building FakeSandboxes that share `programs`."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="ks-fake-"))
        self.programs: dict[str, Program] = {}
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.config_paths: list[str | None] = []  # what `load` was called with
        self.built = 0
        self.stop_delay = 0.0

    def load(self, config_path: str | None) -> SandboxFarm:
        """TaskService provider_loader."""
        self.config_paths.append(config_path)
        return self

    def __call__(self, sandbox_id: str) -> FakeSandbox:
        self.built += 1
        state = self.root / f"{sandbox_id}-{self.built}"
        sandbox = FakeSandbox(SandboxSpec(sandbox_id=sandbox_id, state_dir=state))
        sandbox.agent.programs = self.programs
        sandbox.stop_delay = self.stop_delay
        self.sandboxes[sandbox_id] = sandbox
        return sandbox

    def agent(self, sandbox_id: str) -> FakeAgent:
        return self.sandboxes[sandbox_id].agent

    async def cleanup(self) -> None:
        for sandbox in self.sandboxes.values():
            for client in sandbox.clients:
                client.close()
                await client.wait_closed()
            await sandbox.agent.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)
