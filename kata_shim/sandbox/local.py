"""The `local` sandbox: the guest agent as a host process. NOT ISOLATED — no VM.

For development, CI and hosts without virtualization: containers run on the
host kernel through runc, exactly as the agent would run them inside a VM.
The agent runs in its own session (process group) and listens on
`<state_dir>/agent.sock`; its log goes to `<state_dir>/agent.log`. `stop`
asks it to remove its containers (SIGTERM) and kills the group after the
timeout; `cleanup` force-deletes any runc container a crashed agent left and
removes the state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from kata_shim import mounts
from kata_shim.errors import DeadlineExceeded, ShimError, Unavailable
from kata_shim.proto import health_pb2
from kata_shim.proto.health_ttrpc import HealthClient
from kata_shim.sandbox.base import Sandbox, SandboxSpec, register_backend
from kata_shim.ttrpc.client import Client

__all__ = ["LocalSandbox"]

log = logging.getLogger(__name__)

DEFAULT_DIAL_TIMEOUT = 45.0


class LocalSandbox(Sandbox):
    backend = "local"
    isolated = False

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)
        self._proc: asyncio.subprocess.Process | None = None
        self.socket_path = spec.state_dir / "agent.sock"
        self.agent_state = spec.state_dir / "agent"

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    @property
    def dial_timeout(self) -> float:
        return float(self.spec.agent.get("dial_timeout", DEFAULT_DIAL_TIMEOUT))

    async def start(self) -> None:
        log.warning(
            "local sandbox %s: containers are NOT isolated in a VM (development/CI only)",
            self.spec.sandbox_id,
        )
        self.spec.state_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "kata_shim.guest.main",
            "--listen",
            f"unix:{self.socket_path}",
            "--state-dir",
            str(self.agent_state),
            "--log-level",
            "debug" if self.spec.debug else "info",
        ]
        with open(self.spec.state_dir / "agent.log", "ab") as agent_log:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=agent_log,
                stderr=agent_log,
                start_new_session=True,
            )
        try:
            client = await self.connect_agent()
        except ShimError:
            await self.stop(timeout=2)
            raise
        client.close()
        await client.wait_closed()
        log.info("local sandbox %s: agent pid %d ready", self.spec.sandbox_id, self.pid)

    async def connect_agent(self) -> Client:
        """Dial the agent's socket until it answers Health.Check or dial_timeout passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.dial_timeout
        last_error: Exception | None = None
        while loop.time() < deadline:
            if self._proc is not None and self._proc.returncode is not None:
                raise Unavailable(f"agent exited with status {self._proc.returncode}")
            try:
                return await self._dial()
            except (OSError, ShimError) as exc:
                last_error = exc
                await asyncio.sleep(0.02)
        raise DeadlineExceeded(f"timed out connecting to agent at {self.socket_path}: {last_error}")

    async def _dial(self) -> Client:
        client = await Client.connect_unix(str(self.socket_path), timeout=2)
        try:
            reply = await HealthClient(client).Check(health_pb2.CheckRequest(), timeout=5)
        except BaseException:
            client.close()
            raise
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            client.close()
            raise Unavailable("agent not serving yet")
        return client

    async def share_rootfs(self, container_id: str, host_rootfs: Path) -> str:
        return str(host_rootfs)  # same kernel, same filesystem

    async def unshare_rootfs(self, container_id: str) -> None:
        return None

    async def wait(self) -> int:
        if self._proc is None:
            return 0
        return await self._proc.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("local sandbox %s: agent ignored SIGTERM; killing", self.spec.sandbox_id)
            self._signal_group(signal.SIGKILL)
            await proc.wait()

    def _signal_group(self, sig: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)

    async def cleanup(self) -> None:
        await self.stop(timeout=5)
        await self._delete_leftover_containers()
        mounts.remove_tree(self.spec.state_dir)

    async def _delete_leftover_containers(self) -> None:
        root = self.agent_state / "runc"
        if not root.is_dir():
            return
        for entry in sorted(root.iterdir()):
            if entry.is_dir():
                log.warning(
                    "local sandbox %s: deleting leftover container %s",
                    self.spec.sandbox_id,
                    entry.name,
                )
                proc = await asyncio.create_subprocess_exec(
                    "runc",
                    "--root",
                    str(root),
                    "delete",
                    "--force",
                    entry.name,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                await proc.wait()


register_backend("local", LocalSandbox)
