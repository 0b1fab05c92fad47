"""A booted sandbox with its agent connection, shared by the containers of one pod.

Owns the Sandbox object, the agent client, the death watch and the OOM loop.
Rules: the pod is "dead" once Sandbox.wait() resolved or the agent connection
dropped; marking it dead closes the agent client, which makes every in-flight
ReadStdout/WaitProcess fail so each process's exit watch reports 255. Teardown
(DestroySandbox → stop → cleanup) runs once, bounded, never under a service
lock, and never before the exits it causes were published (exit watches publish on
their own; teardown is only started by Delete of the last container or close).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from kata_shim.agent.client import AgentClient, AgentTimeouts
from kata_shim.errors import ShimError, Unavailable, Unimplemented
from kata_shim.sandbox.base import PodNetworkRequest, Sandbox
from kata_shim.sandbox.podcgroup import PodCgroup, host_paths
from kata_shim.sandbox.sizing import SizingRequest
from kata_shim.task.observer import TaskObserver
from kata_shim.task.tuning import Tuning
from kata_shim.ttrpc.client import Client

__all__ = ["Pod"]

log = logging.getLogger(__name__)


class Pod:
    """One sandbox (VM) and its agent; lifecycle boot → (containers) → teardown."""

    def __init__(
        self,
        sandbox_id: str,
        sandbox: Sandbox,
        tuning: Tuning,
        observer: TaskObserver | None = None,
    ) -> None:
        self.id = sandbox_id
        self.sandbox = sandbox
        self.tuning = tuning
        self.observer = observer or TaskObserver()
        self._client: Client | None = None
        self._agent: AgentClient | None = None
        #: ids of this pod's containers, including ones being created (service, event loop)
        self.containers: set[str] = set()
        #: resolves when boot finished (True) or failed (False); pod containers wait on it
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.dead = False  # set once by `mark_dead`
        self._on_death: list[Callable[[Pod], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._teardown: asyncio.Task[None] | None = None
        #: the pod's host cgroup, when [runtime] sandbox_cgroup_only (sandbox/podcgroup.py)
        self.cgroup: PodCgroup | None = None

    @property
    def pid(self) -> int:
        """The pid reported to containerd for every task and exec (Kata: hypervisor pid)."""
        return self.sandbox.pid

    @property
    def agent(self) -> AgentClient:
        if self._agent is None or self.dead:
            raise Unavailable(f"sandbox {self.id}: agent not available")
        return self._agent

    def attach_agent(self, agent: AgentClient) -> None:
        """Use `agent` for this pod's agent calls (boot does, once the agent answered)."""
        self._agent = agent

    def _agent_timeouts(self) -> AgentTimeouts:
        tuning = self.tuning
        return AgentTimeouts(
            tuning.agent_timeout, tuning.remove_timeout, tuning.sandbox_stop_timeout
        )

    # boot ---------------------------------------------------------------------------
    async def boot(
        self,
        hostname: str,
        network: PodNetworkRequest | None = None,
        sizing: SizingRequest | None = None,
        *,
        cgroups_path: str = "",
    ) -> None:
        """Start the sandbox (sized by `sizing`, with the pod's `network`, in the host cgroup
        `cgroups_path` names), dial and check the agent, configure the guest's network,
        CreateSandbox. Leaves nothing on failure."""
        began = time.monotonic()
        try:
            if sizing is not None:
                self.sandbox.use_sizing(sizing)
            if network is not None:
                self.sandbox.use_network(network)
            self._enter_cgroup(cgroups_path)
            await self.sandbox.start()
            if self.cgroup is not None:
                self.cgroup.join(self.sandbox.pid)  # a pre-forked or libvirt-started process
                self.cgroup.record(self.sandbox.spec.state_dir)
            self._client = await self.sandbox.connect_agent()  # answered Health.Check
            self._client.observer = self.observer.agent_rpc
            self.attach_agent(AgentClient(self._client, self._agent_timeouts()))
            await self.sandbox.configure_guest_network(self.agent)
            await self.agent.create_sandbox(self.id, hostname)
        except BaseException:
            self.ready.set_result(False)
            await asyncio.shield(self._destroy(destroy_in_agent=False))
            raise
        self.ready.set_result(True)
        self.observer.sandbox_booted(self, time.monotonic() - began)
        log.info("sandbox %s booted (pid %d)", self.id, self.pid)

    def _enter_cgroup(self, cgroups_path: str) -> None:
        """With sandbox_cgroup_only: create the pod's host cgroup and move the shim in, so
        the sandbox's processes start there."""
        if not self.sandbox.spec.sandbox_cgroup_only:
            return
        if not cgroups_path:
            log.info("sandbox %s: no cgroupsPath in the spec: no host cgroup", self.id)
            return
        cgroup = PodCgroup(host_paths(cgroups_path, self.id))
        cgroup.create()
        self.cgroup = cgroup
        cgroup.enter()
        log.info("sandbox %s: host cgroup %s", self.id, cgroup.paths.sandbox)

    async def _leave_cgroup(self) -> None:
        """After the sandbox's processes are gone: the shim moves out, the cgroup goes."""
        if self.cgroup is not None:
            self.cgroup.leave()
            await self.cgroup.remove()

    def watch(self, on_death: Callable[[Pod], None], on_oom: Callable[[str], None]) -> None:
        """Start the death watch and the OOM event loop."""
        self._on_death.append(on_death)
        self._client_close_hook()
        for coro in (self._watch_sandbox(), self._oom_loop(on_oom)):
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _client_close_hook(self) -> None:
        client = self._client
        if client is not None:
            client.add_close_callback(lambda: self.mark_dead("agent connection lost"))

    async def _watch_sandbox(self) -> None:
        status = await self.sandbox.wait()
        self.mark_dead(f"sandbox exited with status {status}")

    async def _oom_loop(self, on_oom: Callable[[str], None]) -> None:
        while not self.dead:
            try:
                container_id = await self.agent.get_oom_event()
            except (Unavailable, Unimplemented):
                return
            except ShimError as exc:
                log.debug("sandbox %s: GetOOMEvent: %s", self.id, exc)
                await asyncio.sleep(1.0)
                continue
            on_oom(container_id)

    def mark_dead(self, reason: str, level: int = logging.WARNING) -> None:
        """The sandbox or its agent is gone: fail every agent call from now on."""
        if self.dead:
            return
        self.dead = True
        log.log(level, "sandbox %s is dead: %s", self.id, reason)
        if self._client is not None:
            self._client.close()
        for callback in self._on_death:
            try:
                callback(self)
            except Exception:
                log.exception("sandbox %s: death callback failed", self.id)

    # teardown ---------------------------------------------------------------------------
    def teardown(self) -> asyncio.Task[None]:
        """Start (once) and return the teardown task: DestroySandbox, stop, cleanup."""
        if self._teardown is None:
            coro = self._destroy(destroy_in_agent=True)
            self._teardown = asyncio.get_running_loop().create_task(coro)
        return self._teardown

    async def _destroy(self, *, destroy_in_agent: bool) -> None:
        if destroy_in_agent and not self.dead and self._agent is not None:
            with contextlib.suppress(ShimError, OSError):
                await self._agent.destroy_sandbox()
                self.sandbox.agent_destroyed()
        self.mark_dead("torn down", logging.INFO)
        for task in list(self._tasks):
            task.cancel()
        try:
            await self.sandbox.stop(timeout=self.tuning.sandbox_stop_timeout)
        except Exception:
            log.exception("sandbox %s: stop failed", self.id)
        try:
            await self.sandbox.cleanup()
        except Exception:
            log.exception("sandbox %s: cleanup failed", self.id)
        await self._leave_cgroup()
        log.info("sandbox %s torn down", self.id)
