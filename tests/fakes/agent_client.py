"""FakeAgentClient: the AgentClient interface in memory (no ttrpc, no agent process).

For task-layer tests that do not pump stdio (every output stream is at EOF at once,
stdin is swallowed; drive real stdio with tests/fakes' FakeAgent): every
call is recorded in `calls` as (method, *ids) in order; `fail[method]` makes a
method raise; containers and processes are tracked just enough for the
contract the task layer relies on — `wait` resolves when the process exits
(`exit()` or a signal), a signal to a process that already exited (or is
unknown) raises NotFound, SIGKILL of a whole container (exec_id None) ends all
of its processes, `remove` ends what is left. Networking keeps the guest's
interfaces, routes and ARP neighbours as lists.
"""

from __future__ import annotations

import asyncio
import signal as signals
from collections.abc import Iterable, Sequence

from kata_shim import errors
from kata_shim.agent.client import AgentClient, AgentTimeouts
from kata_shim.proto import agent_pb2, oci_pb2, types_pb2

__all__ = ["FakeAgentClient"]


class FakeAgentClient(AgentClient):
    """An AgentClient whose agent is a few dicts (event loop only)."""

    def __init__(self, timeouts: AgentTimeouts | None = None) -> None:  # no super(): no Client
        self.timeouts = timeouts or AgentTimeouts()
        self.calls: list[tuple[str, ...]] = []
        self.fail: dict[str, errors.ShimError] = {}
        self.specs: dict[str, oci_pb2.Spec] = {}
        self.sandbox_pidns: dict[str, bool] = {}  # CreateContainer's flag, by container id
        self.cgroup_stats = agent_pb2.CgroupStats()
        self.oom_events: asyncio.Queue[str] = asyncio.Queue()
        self.interfaces: list[types_pb2.Interface] = []
        self.routes: list[types_pb2.Route] = []
        self.neighbors: list[types_pb2.ARPNeighbor] = []
        self._exits: dict[tuple[str, str], asyncio.Future[int]] = {}

    # bookkeeping ------------------------------------------------------------------------
    def _enter(self, method: str, *detail: str) -> None:
        self.calls.append((method, *detail))
        if method in self.fail:
            raise self.fail[method]

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    def process_exit(self, cid: str, exec_id: str) -> asyncio.Future[int]:
        """The exit future of a process (init: exec id == container id)."""
        key = (cid, exec_id)
        if key not in self._exits:
            self._exits[key] = asyncio.get_running_loop().create_future()
        return self._exits[key]

    def exit(self, cid: str, exec_id: str, status: int) -> None:
        """The process exits on its own with `status`."""
        future = self.process_exit(cid, exec_id)
        if not future.done():
            future.set_result(status)

    def _running(self, cid: str) -> list[tuple[str, str]]:
        return [k for k, f in self._exits.items() if k[0] == cid and not f.done()]

    # sandbox --------------------------------------------------------------------------
    async def create_sandbox(self, sandbox_id: str, hostname: str) -> None:
        self._enter("create_sandbox", sandbox_id, hostname)

    async def destroy_sandbox(self) -> None:
        self._enter("destroy_sandbox")

    async def get_oom_event(self) -> str:
        return await self.oom_events.get()

    # containers -----------------------------------------------------------------------
    async def create_container(
        self,
        cid: str,
        oci: oci_pb2.Spec,
        storages: Sequence[agent_pb2.Storage] = (),
        *,
        sandbox_pidns: bool = False,
    ) -> None:
        self._enter("create_container", cid)
        if cid in self.specs:
            raise errors.AlreadyExists(f"container {cid} exists")
        self.specs[cid] = oci
        self.sandbox_pidns[cid] = sandbox_pidns
        self.process_exit(cid, cid)

    async def start(self, cid: str) -> None:
        self._enter("start", cid)

    async def remove(self, cid: str) -> None:
        self._enter("remove", cid)
        for key in self._running(cid):
            self.exit(*key, 137)
        self.specs.pop(cid, None)

    async def pause(self, cid: str) -> None:
        self._enter("pause", cid)

    async def resume(self, cid: str) -> None:
        self._enter("resume", cid)

    async def update_container(self, cid: str, resources: oci_pb2.LinuxResources) -> None:
        self._enter("update_container", cid)

    async def stats(self, cid: str) -> agent_pb2.CgroupStats:
        self._enter("stats", cid)
        return self.cgroup_stats

    # processes ------------------------------------------------------------------------
    async def exec_process(self, cid: str, exec_id: str, process: oci_pb2.Process) -> None:
        self._enter("exec_process", cid, exec_id)
        self.process_exit(cid, exec_id)

    async def signal(self, cid: str, sig: int, *, exec_id: str | None = None) -> None:
        self._enter("signal", cid, exec_id or "", str(sig))
        target = (cid, exec_id or cid)
        if target not in self._exits or self._exits[target].done():
            raise errors.NotFound("process already exited")
        if exec_id is None and sig == signals.SIGKILL:
            targets = self._running(cid)
        else:
            targets = [target] if sig else []
        for key in targets:
            self.exit(*key, 128 + sig)

    async def wait(self, cid: str, exec_id: str) -> int:
        self._enter("wait", cid, exec_id)
        return await asyncio.shield(self.process_exit(cid, exec_id))

    # stdio ----------------------------------------------------------------------------
    async def read_stream(
        self, cid: str, exec_id: str, size: int, *, stderr: bool = False
    ) -> memoryview:
        self._enter("read_stream", cid, exec_id, "stderr" if stderr else "stdout")
        return memoryview(b"")

    async def write_stdin(self, cid: str, exec_id: str, data: bytes) -> int:
        self._enter("write_stdin", cid, exec_id, str(len(data)))
        return len(data)

    async def close_stdin(self, cid: str, exec_id: str) -> None:
        self._enter("close_stdin", cid, exec_id)

    async def resize_tty(self, cid: str, exec_id: str, width: int, height: int) -> None:
        self._enter("resize_tty", cid, exec_id, str(width), str(height))
        if (cid, exec_id) not in self._exits:
            raise errors.NotFound(f"process {exec_id} not found")

    # networking -----------------------------------------------------------------------
    async def update_interface(self, interface: types_pb2.Interface) -> types_pb2.Interface:
        self._enter("update_interface", interface.name)
        self.interfaces = [i for i in self.interfaces if i.hwAddr != interface.hwAddr]
        self.interfaces.append(interface)
        return interface

    async def update_routes(self, routes: Iterable[types_pb2.Route]) -> list[types_pb2.Route]:
        self._enter("update_routes")
        self.routes = list(routes)
        return list(self.routes)

    async def list_interfaces(self) -> list[types_pb2.Interface]:
        self._enter("list_interfaces")
        return list(self.interfaces)

    async def list_routes(self) -> list[types_pb2.Route]:
        self._enter("list_routes")
        return list(self.routes)

    async def add_arp_neighbors(self, neighbors: Iterable[types_pb2.ARPNeighbor]) -> None:
        self._enter("add_arp_neighbors")
        self.neighbors.extend(neighbors)
