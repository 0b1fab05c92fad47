"""The shim's pods by sandbox id: boot on a sandbox's (or single container's) Create,
reuse for a pod container's, tear down after the last container's Delete.

Rules: a pod is registered the moment its boot begins (pod containers arriving
meanwhile wait for `ready`); a container counts towards its pod from the start
of its Create; teardowns run as tracked background tasks so Delete never waits
for a VM to stop and Shutdown/close can wait for them with a bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kata_shim.errors import AlreadyExists, FailedPrecondition, NotFound
from kata_shim.sandbox.base import PodNetworkRequest, SandboxProvider
from kata_shim.sandbox.sizing import SizingRequest
from kata_shim.task.observer import TaskObserver
from kata_shim.task.pod import Pod
from kata_shim.task.spec import Placement, Role
from kata_shim.task.tuning import Tuning

__all__ = ["PodRegistry"]

log = logging.getLogger(__name__)


class PodRegistry:
    def __init__(
        self,
        tuning: Tuning,
        on_death: Callable[[Pod], None],
        on_oom: Callable[[str], None],
        observer: TaskObserver | None = None,
    ) -> None:
        self._observer = observer or TaskObserver()
        self._tuning = tuning
        self._on_death = on_death
        self._on_oom = on_oom
        self._pods: dict[str, Pod] = {}  # event loop, await-free mutations
        self._teardowns: set[asyncio.Task[None]] = set()

    def __iter__(self) -> Any:
        return iter(list(self._pods.values()))

    async def acquire(
        self,
        where: Placement,
        provider: SandboxProvider,
        hostname: str,
        container_id: str,
        network: PodNetworkRequest | None = None,
        sizing: SizingRequest | None = None,
        *,
        cgroups_path: str = "",
    ) -> Pod:
        """The pod `container_id` goes into (booted now for a sandbox or single container,
        with `network`, `sizing` and the host cgroup `cgroups_path`: a pod container's are
        its sandbox's)."""
        if where.role is Role.CONTAINER:
            return await self._join(where.sandbox_id, container_id)
        if where.sandbox_id in self._pods:
            raise AlreadyExists(f"sandbox {where.sandbox_id} already exists in this shim")
        sandbox = provider(where.sandbox_id)
        pod = Pod(where.sandbox_id, sandbox, self._tuning, self._observer)
        pod.containers.add(container_id)
        self._pods[pod.id] = pod
        self._observer.sandbox_created(pod)
        try:
            await pod.boot(hostname, network, sizing, cgroups_path=cgroups_path)
        except BaseException:
            if self._pods.get(pod.id) is pod:
                del self._pods[pod.id]
            self._observer.sandbox_gone(pod)
            raise
        pod.watch(self._on_death, self._on_oom)
        return pod

    async def _join(self, sandbox_id: str, container_id: str) -> Pod:
        pod = self._pods.get(sandbox_id)
        if pod is None:
            raise NotFound(f"sandbox {sandbox_id} not found in this shim")
        pod.containers.add(container_id)
        if not await asyncio.shield(pod.ready) or pod.dead:
            self.release(pod, container_id)
            raise FailedPrecondition(f"sandbox {sandbox_id} is not running")
        return pod

    def release(self, pod: Pod, container_id: str) -> None:
        """`container_id` left `pod`; tear the pod down (in the background) if it is empty."""
        pod.containers.discard(container_id)
        if pod.containers or not pod.ready.done():
            return
        if self._pods.get(pod.id) is pod:
            del self._pods[pod.id]
        self._track_teardown(pod)

    def _track_teardown(self, pod: Pod) -> None:
        task = pod.teardown()
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)
        task.add_done_callback(lambda _: self._observer.sandbox_gone(pod))

    async def wait_teardowns(self, timeout: float) -> None:
        """Wait (bounded) for background teardowns; a straggler is logged, not cancelled."""
        pending = set(self._teardowns)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        if late:
            log.error("%d sandbox teardown(s) still running after %gs", len(late), timeout)

    async def close(self, timeout: float) -> None:
        """Tear every pod down (SIGTERM path) and wait, bounded."""
        for pod in list(self._pods.values()):
            del self._pods[pod.id]
            self._track_teardown(pod)
        await self.wait_teardowns(timeout)
