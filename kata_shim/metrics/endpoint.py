"""The per-sandbox management endpoint: HTTP on `<state_dir>/<sandbox-id>/shim-monitor.sock`.

Opened when the pod's sandbox object is created (before boot, so a stuck boot
is visible), closed when its teardown ends or the shim exits; the socket is
0600 (same uid as the shim). Paths (the names of Kata's shim management
server where they exist):
  /metrics    Prometheus text (this shim's ShimMetrics)
  /agent-url  the address the shim dials the guest agent on (text)
  /info       JSON: sandbox id, shim pid, sandbox pid, state, backend, agent url, console,
              pod network interfaces (name, MAC, tap, addresses)
The sandbox's cleanup removes its state dir; `close` unlinks the socket too when
it is still ours (same inode), e.g. after a failed boot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from kata_shim.debugconsole import CONSOLE_SOCKET
from kata_shim.metrics.http import HEAD_LIMIT, Request, Response, bind_unix, handler_for
from kata_shim.metrics.recorder import ShimMetrics

if TYPE_CHECKING:
    from kata_shim.sandbox.base import Sandbox
    from kata_shim.task.pod import Pod

__all__ = ["SOCKET_NAME", "SandboxEndpoint", "agent_url", "sandbox_state"]

log = logging.getLogger(__name__)

SOCKET_NAME = "shim-monitor.sock"


def agent_url(sandbox: Sandbox) -> str:
    """Where the shim dials `sandbox`'s agent: unix://<path> or vsock://<cid>:<port>."""
    return sandbox.agent_address().url()


def sandbox_state(pod: Pod) -> str:
    """booting → running → dead; failed when the boot did not complete."""
    if pod.dead:
        return "dead" if pod.ready.done() and pod.ready.result() else "failed"
    if not pod.ready.done():
        return "booting"
    return "running" if pod.ready.result() else "failed"


class SandboxEndpoint:
    """One sandbox's listener; all of them serve the same shim's metrics."""

    def __init__(self, pod: Pod, metrics: ShimMetrics, shim_pid: int) -> None:
        self.pod = pod
        self.metrics = metrics
        self.shim_pid = shim_pid
        self.path = pod.sandbox.spec.state_dir / SOCKET_NAME
        self._server: asyncio.AbstractServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._inode: tuple[int, int] | None = None

    def open(self) -> None:
        """Bind now (scrapers queue in the backlog) and serve from the event loop."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sock = bind_unix(str(self.path))
        info = os.stat(self.path)
        self._inode = (info.st_dev, info.st_ino)
        routes = {"/metrics": self._metrics, "/agent-url": self._agent_url, "/info": self._info}
        start = asyncio.start_unix_server(handler_for(routes), sock=sock, limit=HEAD_LIMIT)
        self._task = asyncio.get_running_loop().create_task(self._serve(start))

    async def _serve(self, start: Awaitable[asyncio.AbstractServer]) -> None:
        self._server = await start

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._inode:
                os.unlink(self.path)

    def info(self) -> dict[str, object]:
        pod = self.pod
        console = pod.sandbox.spec.state_dir / CONSOLE_SOCKET
        return {
            "id": pod.id,
            "shim_pid": self.shim_pid,
            "sandbox_pid": pod.pid,
            "state": sandbox_state(pod),
            "backend": pod.sandbox.backend,
            "agent_url": agent_url(pod.sandbox),
            "console": str(console) if console.exists() else "",
            "interfaces": pod.sandbox.network_interfaces(),
        }

    async def _metrics(self, request: Request) -> Response:
        body, content_type = self.metrics.render()
        return Response(200, body, content_type)

    async def _agent_url(self, request: Request) -> Response:
        return Response.text(agent_url(self.pod.sandbox) + "\n")

    async def _info(self, request: Request) -> Response:
        return Response(200, json.dumps(self.info()).encode() + b"\n", "application/json")
