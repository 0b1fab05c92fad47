"""ShimObserver: the daemon's TaskObserver — records metrics, runs the sandbox endpoints.

The daemon hands `observer` to the TaskService, `observer.rpc` to the ttrpc
Server (RpcObserver), and sets `observer.metrics.task_states` to the service's
`process_states`. Hooks never raise into the task layer: an endpoint that
cannot be opened is logged and the pod boots anyway.
"""

from __future__ import annotations

import logging

from kata_shim.metrics.endpoint import SandboxEndpoint
from kata_shim.metrics.recorder import ShimMetrics
from kata_shim.task.observer import TaskObserver
from kata_shim.task.pod import Pod

__all__ = ["ShimObserver"]

log = logging.getLogger(__name__)


class ShimObserver(TaskObserver):
    def __init__(self, shim_pid: int) -> None:
        self.shim_pid = shim_pid
        self.metrics = ShimMetrics()
        self.endpoints: dict[str, SandboxEndpoint] = {}
        self.rpc = self.metrics.rpc  # the ttrpc server's RpcObserver

    def sandbox_created(self, pod: Pod) -> None:
        endpoint = SandboxEndpoint(pod, self.metrics, self.shim_pid)
        try:
            endpoint.open()
        except OSError as exc:
            log.warning("sandbox %s: no management endpoint at %s: %s", pod.id, endpoint.path, exc)
            return
        self.endpoints[pod.id] = endpoint
        log.debug("sandbox %s: management endpoint %s", pod.id, endpoint.path)

    def sandbox_booted(self, pod: Pod, seconds: float) -> None:
        self.metrics.booted(seconds)

    def sandbox_gone(self, pod: Pod) -> None:
        endpoint = self.endpoints.get(pod.id)
        if endpoint is not None and endpoint.pod is pod:
            del self.endpoints[pod.id]
            endpoint.close()

    def exit_published(self, seconds: float) -> None:
        self.metrics.exit_published(seconds)

    def agent_rpc(self, service: str, method: str, code: int, seconds: float) -> None:
        self.metrics.agent_rpc(service, method, code, seconds)

    def close(self) -> None:
        """Close every endpoint (the daemon is exiting)."""
        for endpoint in self.endpoints.values():
            endpoint.close()
        self.endpoints.clear()
