"""QemuSandbox: a pod's VM. QEMU started directly (no shell), QMP for control.

State lives in `<state_dir>` (default /run/kata-shim/<sandbox-id>/): qmp.sock,
agent.sock (the virtio-serial channel's host end), console.log and `shared/`,
the 9p-exported directory into which each container's rootfs and volumes are
bind-mounted (sandbox/share.py). The VM's
death is the QEMU process exit, or a QMP death event (qemu/events.py), after
which QEMU is killed; `wait` resolves then. `cleanup` unmounts,
kills a leftover QEMU and removes the state dir, idempotently.

Start-up errors the user can act on: the configuration and the host are
checked before launch (sandbox/preflight.py); a QEMU that exits anyway, or a
guest whose agent never answers, becomes a ShimError carrying the exit status
and the tails of qemu.log (QEMU's stderr) and console.log (the guest's serial
console) — never a QMP connection error (sandbox/diagnostics.py).
QEMU's chowns are answered by the owner guard (qemu/ownerguard.py): only
owners the pod has (`allow_owners`) may be given to a shared host file.
With `shared_fs = "virtio-fs"` the share is served by the sandbox's virtiofsd
(qemu/virtiofsd.py, with its own guard), started before QEMU; its exit while
the VM runs is the VM's death (QEMU is killed), and QEMU's exit, however it
comes, ends and reaps virtiofsd (`VirtiofsDaemon.watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemu.qmp import ConnectError, QMPClient

from kata_shim import mounts
from kata_shim.errors import DeadlineExceeded, ShimError, Unavailable
from kata_shim.sandbox import vsock
from kata_shim.sandbox.base import PodNetworkRequest, Sandbox, SandboxSpec, register_backend
from kata_shim.sandbox.diagnostics import (
    agent_channel,
    agent_silent,
    log_start_failure,
    logged_start,
    vm_exited,
)
from kata_shim.sandbox.dial import AgentAddress, UnixAddress, VsockAddress
from kata_shim.sandbox.owners import Owners
from kata_shim.sandbox.preflight import Origin, launch_problems, qemu_config
from kata_shim.sandbox.qemu.accel import choose_accel, host_tsc_khz
from kata_shim.sandbox.qemu.cmdline import AGENT_PORT, SandboxPaths, VsockChannel, build_command
from kata_shim.sandbox.qemu.events import events_socket, watch_for_death
from kata_shim.sandbox.qemu.netdev import nic_fds
from kata_shim.sandbox.qemu.ownerguard import ATTACH_TIMEOUT, OwnerGuard, spawn_guarded
from kata_shim.sandbox.qemu.podnet import QemuPodNetwork
from kata_shim.sandbox.qemu.virtiofsd import VirtiofsDaemon
from kata_shim.sandbox.share import SharedDir
from kata_shim.sandbox.sizing import SizingRequest, size_vm

if TYPE_CHECKING:
    from kata_shim.agent.client import AgentClient

__all__ = ["QemuSandbox"]

log = logging.getLogger(__name__)


class QemuSandbox(Sandbox):
    backend = "qemu"
    isolated = True

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)
        self.origin = Origin(spec.config_source, "hypervisor.qemu")
        try:
            self.config = qemu_config(spec.hypervisor.table, self.origin)
        except ShimError as exc:
            log_start_failure(spec.sandbox_id, exc)
            raise
        state = spec.state_dir
        self.paths = SandboxPaths(
            state / "qmp.sock", state / "agent.sock", state / "console.log", state / "shared"
        )
        self.shared = SharedDir(self.paths.share)
        self._proc: asyncio.subprocess.Process | None = None
        self._death_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.death_event = ""  # the QMP event that ended the VM, if one did
        self.accel = ""
        self.vsock: VsockChannel | None = None  # set when the agent channel is vhost-vsock
        self._launched_at = 0.0
        self.network: QemuPodNetwork | None = None  # the pod netns carried in (use_network)
        self.owners = Owners()  # what QEMU may chown shared files to (allow_owners)
        self.guard: OwnerGuard | None = None  # answers QEMU's chowns once it runs
        self.fs_daemon: VirtiofsDaemon | None = None  # shared_fs = "virtio-fs"
        self._fs_watch: asyncio.Task[None] | None = None

    def _claim_channel(self) -> None:
        """vhost-vsock when configured (or `auto` and the host has it), else virtio-serial."""
        wanted = self.config.agent_channel
        if wanted == "vsock" or (wanted == "auto" and vsock.vhost_vsock_available()):
            fd, cid = vsock.allocate_guest_cid()
            self.vsock = VsockChannel(fd, cid)
            log.info("sandbox %s: agent over vhost-vsock, guest CID %d", self.spec.sandbox_id, cid)

    def _release_channel(self) -> None:
        if self.vsock is not None:
            os.close(self.vsock.vhost_fd)
            self.vsock = None

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def agent_address(self) -> AgentAddress:
        if self.vsock is not None:
            return VsockAddress(self.vsock.cid)
        return UnixAddress(self.paths.agent)

    def use_network(self, request: PodNetworkRequest) -> None:
        spec = self.spec
        self.network = QemuPodNetwork(
            spec.sandbox_id, spec.state_dir, request.netns, spec.internetworking_model
        )

    def use_sizing(self, request: SizingRequest) -> None:
        table, static = self.spec.hypervisor.table, self.spec.static_sandbox_resource_mgmt
        self.config = size_vm(self.config, request, table, self.origin, static=static)

    async def configure_guest_network(self, agent: AgentClient) -> None:
        if self.network is not None:
            await self.network.configure_guest(agent)

    def network_interfaces(self) -> list[dict[str, Any]]:
        return self.network.describe() if self.network is not None else []

    async def start(self) -> None:
        await logged_start(self.spec.sandbox_id, self._start())

    def _preflight(self) -> None:
        problems = launch_problems(self.spec.hypervisor.table, self.origin)
        for problem in problems[1:]:
            log.error("sandbox %s: also: %s", self.spec.sandbox_id, problem.message)
        if problems:
            raise problems[0].error()

    async def _start(self) -> None:
        self._preflight()
        virtio_fs = self.config.shared_fs == "virtio-fs"
        self.shared.create(propagating=virtio_fs)  # virtiofsd serves a slave copy of it
        self.accel = choose_accel(self.config.accel)
        self._claim_channel()
        nics = await self.network.prepare() if self.network is not None else ()
        argv = build_command(
            self.config, self.paths, self.accel, host_tsc_khz(), self.vsock, nics=nics
        )
        log.info("sandbox %s: starting %s", self.spec.sandbox_id, " ".join(argv))
        self._launched_at = time.monotonic()
        vhost = (self.vsock.vhost_fd,) if self.vsock is not None else ()
        try:
            if virtio_fs:
                await self._start_fs_daemon()
            await self._spawn(argv, vhost + nic_fds(nics))
        except BaseException:
            await self._stop_fs_daemon()  # no QEMU: nothing else would end it
            raise
        finally:
            if self.network is not None:
                self.network.close_fds()  # QEMU holds the taps now
        self._start_fs_watch()
        try:
            if self.guard is not None:
                await self.guard.attach(ATTACH_TIMEOUT)
            await self._check_qmp()
            self._start_death_watch()
            await self._await_agent()
        except BaseException as exc:
            failure = await self._launch_failure(exc)
            await self.stop(timeout=1)
            if failure is not None:
                raise failure from exc
            raise

    async def _spawn(self, argv: list[str], fds: tuple[int, ...]) -> None:
        """Start QEMU with `fds`; under the jail, with the owner guard's socket too."""
        log_path = self.spec.state_dir / "qemu.log"
        self._proc, self.guard = await spawn_guarded(
            self.spec.sandbox_id, argv, fds, self.owners, log_path
        )

    async def _start_fs_daemon(self) -> None:
        spec = self.spec
        self.fs_daemon = VirtiofsDaemon(
            spec.sandbox_id, self.config.virtio_fs, self.paths.share, spec.state_dir
        )
        await self.fs_daemon.start(self.owners)

    def _start_fs_watch(self) -> None:
        if self.fs_daemon is not None and self._proc is not None:
            watch = self.fs_daemon.watch(self._proc, self._fs_daemon_died)
            self._fs_watch = asyncio.get_running_loop().create_task(watch)

    def _fs_daemon_died(self, why: str) -> None:
        """virtiofsd exited while QEMU runs: the VM's death (kill QEMU, `wait` resolves)."""
        if not self._stopping:
            self.death_event = why
            log.warning("sandbox %s: %s: the VM is gone", self.spec.sandbox_id, why)
            self._kill()

    def _start_death_watch(self) -> None:
        task = asyncio.get_running_loop().create_task(self._death_watch())
        self._death_task = task

    async def _death_watch(self) -> None:
        """A death event from QMP: kill QEMU, so `wait` (its exit) resolves now."""
        socket = events_socket(self.paths.qmp)
        try:
            event = await watch_for_death(socket, f"kata-shim-events-{self.spec.sandbox_id}")
        except Exception as exc:  # QEMU gone (EOF), or no monitor: the exit watch remains
            log.debug("sandbox %s: QMP event watch ended: %r", self.spec.sandbox_id, exc)
            return
        self.death_event = event
        if not self._stopping:
            log.warning("sandbox %s: QMP %s: the VM is gone", self.spec.sandbox_id, event)
        self._kill()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def _check_qmp(self) -> None:
        """The VM must be running; a QEMU that fails early surfaces its own error."""
        status = await self.qmp("query-status", timeout=30)
        if not isinstance(status, dict) or status.get("status") not in ("running", "prelaunch"):
            raise Unavailable(f"VM is not running: {status}")

    async def qmp(self, command: str, timeout: float = 10.0) -> object:
        """Run one QMP command on a short-lived connection."""
        client = await self._qmp_client(asyncio.get_running_loop().time() + timeout)
        try:
            return await asyncio.wait_for(client.execute(command), timeout)
        finally:
            # a QEMU that closed the monitor (a STOP kills it) makes disconnect re-raise
            # the reader's EOF; the command's own outcome is what the caller gets
            with contextlib.suppress(EOFError, OSError):
                await client.disconnect()

    async def _qmp_client(self, deadline: float) -> QMPClient:
        """A connected QMP client. QEMU creates the socket early and binds it before it
        listens: a refused connection is retried (bounded) while QEMU runs."""
        loop = asyncio.get_running_loop()
        while True:
            self._raise_if_exited()
            if self.paths.qmp.exists():
                client = QMPClient(f"kata-shim-{self.spec.sandbox_id}")
                remaining = max(deadline - loop.time(), 0.1)
                try:
                    await asyncio.wait_for(client.connect(str(self.paths.qmp)), remaining)
                    return client
                except TimeoutError:
                    raise DeadlineExceeded(f"QMP monitor {self.paths.qmp} did not greet") from None
                except ConnectError:
                    if loop.time() > deadline:
                        raise
            elif loop.time() > deadline:
                raise DeadlineExceeded(f"QMP socket {self.paths.qmp} did not appear")
            await asyncio.sleep(0.05)

    def _raise_if_exited(self) -> None:
        if self._proc is not None and self._proc.returncode is not None:
            raise self._exited_error(self._proc.returncode)

    def _exited_error(self, returncode: int) -> ShimError:
        return vm_exited(
            f"QEMU {self.config.path} (pid {self.pid})",
            returncode,
            time.monotonic() - self._launched_at,
            (self.spec.state_dir / "qemu.log", self.paths.console),
            self.origin,
            self.death_event,
        )

    async def _launch_failure(self, exc: BaseException) -> ShimError | None:
        """What the user should see for `exc` from QMP or the agent dial during start."""
        proc = self._proc
        if proc is None or isinstance(exc, asyncio.CancelledError):
            return None
        if proc.returncode is None and not isinstance(exc, ShimError):
            with contextlib.suppress(TimeoutError):  # a QMP EOF: QEMU is on its way out
                await asyncio.wait_for(proc.wait(), 2)
        if proc.returncode is not None:
            return self._exited_error(proc.returncode)
        if isinstance(exc, ShimError):
            return None
        return Unavailable(
            f"QEMU (pid {proc.pid}) is running but its QMP monitor {self.paths.qmp} failed: "
            f"{type(exc).__name__}: {exc}"
        )

    def _check_alive(self) -> None:
        self._raise_if_exited()

    def _agent_silent(self, last_error: Exception | None) -> ShimError:
        return agent_silent(
            self.dial_timeout,
            agent_channel(self.agent_address(), AGENT_PORT),
            f"last dial error: {last_error}; QEMU (pid {self.pid}) is still running",
            Origin(self.spec.config_source, "agent.kata"),
            self.paths.console,
        )

    async def share(
        self, container_id: str, name: str, host_path: Path, *, readonly: bool = False
    ) -> str:
        if name == "rootfs" and self.network is not None:  # a container joins the pod
            await self.network.log_unplugged(container_id)
        return await self.shared.share(container_id, name, host_path, readonly=readonly)

    async def unshare(self, container_id: str) -> None:
        await self.shared.unshare(container_id)

    def allow_owners(self, owners: Owners) -> None:
        self.owners = self.owners | owners
        if self.guard is not None:
            self.guard.allow(owners)
        if self.fs_daemon is not None:
            self.fs_daemon.allow(owners)

    async def wait(self) -> int:
        return await self._proc.wait() if self._proc is not None else 0

    async def stop(self, timeout: float = 10.0) -> None:
        self._drop_answered()
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._stopping = True  # our quit's SHUTDOWN event is not a death
        with contextlib.suppress(Exception):
            await self.qmp("quit", timeout=min(timeout, 3))
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("sandbox %s: QEMU did not quit; killing it", self.spec.sandbox_id)
            self._kill()
            await proc.wait()

    async def _stop_fs_daemon(self) -> None:
        if self._fs_watch is not None:
            self._fs_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fs_watch
        if self.fs_daemon is not None:
            await self.fs_daemon.stop()

    async def cleanup(self) -> None:
        await self.stop(timeout=5)
        if self._death_task is not None:
            self._death_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._death_task
        await self._stop_fs_daemon()
        self._release_channel()
        if self.guard is not None:
            self.guard.close()  # QEMU is gone: nothing left to answer
        if self.network is not None:
            await self.network.teardown()
        await self.shared.unshare_all()
        mounts.unmount_all_under(self.spec.state_dir)
        mounts.remove_tree(self.spec.state_dir)


register_backend("qemu", QemuSandbox)
