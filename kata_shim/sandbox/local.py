"""The `local` sandbox: the guest agent as a host process. NOT ISOLATED — no VM.

For development, CI and hosts without virtualization: containers run on the
host kernel through runc, exactly as the agent would run them inside a VM.
The agent runs in its own session (process group), in the pod's network
namespace (the sandbox container's netns path, `use_network`) and a UTS
namespace of its own holding the pod's hostname (guest/localpod.py). Like the
VM's agent it gives the pod's containers shared IPC and UTS namespaces, the
first container's PID namespace on request, and one /dev/shm (guest/podns.py:
new namespaces pinned under its state dir, never the host's). Containers' host
cgroups are their spec's cgroupsPath, inside the pod's cgroup_parent as runc's
(task/spec.py). It listens on `<state_dir>/agent.sock` and logs to
`<state_dir>/agent.log` (or to our stderr when spec.debug). Its exit is watched
through a pidfd, so no asyncio child watcher (or any other reaper in the shim)
is involved. `stop` SIGTERMs the group (the agent then removes its
containers), SIGKILLs it after the timeout, and then makes sure no runc
container, mount or cgroup of the agent's is left. An agent that dies by
itself has its containers killed and deleted at once (`wait`), as a VM's die
with it. `cleanup` also removes the state directory (never through a mount).

An agent.sock past the 107-byte sun_path (a long state root) is bound and
dialled through a short /proc/self/fd alias (kata_shim/unixpath.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kata_shim import cgroupfs, mounts
from kata_shim.errors import ShimError, Unavailable
from kata_shim.network.netns import check_netns_path
from kata_shim.sandbox.base import PodNetworkRequest, Sandbox, SandboxSpec, register_backend
from kata_shim.sandbox.dial import UnixAddress
from kata_shim.unixpath import check_reachable

__all__ = ["HostProcess", "LocalSandbox"]

log = logging.getLogger(__name__)

UNKNOWN_STATUS = 255  # the exit status was collected by someone else
_MNT_DETACH = 2


#: (argv, stdout, stderr) -> pid of a child already running argv, or None; set by a daemon
#: forked from the fork server (kata_shim.shim.zygote) to hand over its pre-forked agent
AgentSpawner = Callable[[list[str], int, int], "int | None"]
agent_spawner: AgentSpawner | None = None


def _posix_spawn(argv: Sequence[str], stdout: int, stderr: int, new_session: bool) -> int:
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, null, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
            *((os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()),
        ]
        return os.posix_spawnp(
            argv[0],
            list(argv),
            dict(os.environ),
            file_actions=actions,
            setsid=new_session,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            setsigmask=(),
        )
    finally:
        os.close(null)


class HostProcess:
    """A child started with posix_spawn (or handed over by `spawner`), awaited through its pidfd."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdout: int,
        stderr: int,
        new_session: bool = False,
        spawner: AgentSpawner | None = None,
    ) -> None:
        pid = spawner(list(argv), stdout, stderr) if spawner is not None else None
        self.pid = pid if pid is not None else _posix_spawn(argv, stdout, stderr, new_session)
        self._pidfd = os.pidfd_open(self.pid)
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(self._pidfd, self._exited)

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    def _exited(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        try:
            info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:  # reaped by another waiter: the status is gone
            info = None
        os.close(self._pidfd)
        if info is None:
            code = UNKNOWN_STATUS
        elif info.si_code == os.CLD_EXITED:
            code = info.si_status
        else:
            code = -info.si_status  # killed/dumped: -signal, like asyncio
        self._exit.set_result(code)

    async def wait(self) -> int:
        """Exit status: the code, or -signal when signalled."""
        return await asyncio.shield(self._exit)


def _inheritable_fds() -> list[int]:
    """Our fds above 2 that would leak into a spawned child (not close-on-exec)."""
    leaking = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            if fd > 2 and os.get_inheritable(fd):
                leaking.append(fd)
    return leaking


async def run_host(argv: Sequence[str], timeout: float = 30.0) -> int:
    """Run a helper (runc) to completion, output discarded; -9 after a kill at the timeout."""
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        proc = HostProcess(argv, stdout=null, stderr=null)
    finally:
        os.close(null)
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        return await proc.wait()


def unmount_detach(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(path), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            log.warning("umount %s: %s", path, os.strerror(err))


class LocalSandbox(Sandbox):
    backend = "local"
    isolated = False
    dial_retry = 0.001  # the agent serves ~5-10 ms after spawn; a failed dial (ENOENT) costs µs
    dial_health_timeout = 5.0

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)
        self._proc: HostProcess | None = None
        self.socket_path = spec.state_dir / "agent.sock"
        self.agent_state = spec.state_dir / "agent"
        self.netns: Path | None = None  # the pod's network namespace (use_network)
        self._stopping = False  # stop() began: the agent's exit is ours, not a death
        self._graceful = True  # False once DestroySandbox emptied the agent: stop kills it
        self._reaped: asyncio.Task[None] | None = None  # containers of a dead agent, killed

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def agent_address(self) -> UnixAddress:
        return UnixAddress(self.socket_path)

    def _argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "kata_shim.guest.main",
            "--listen",
            f"unix:{self.socket_path}",
            "--state-dir",
            str(self.agent_state),
            "--sandbox-id",
            self.spec.sandbox_id,
            "--log-level",
            "debug" if self.spec.debug else "info",
            "--local-pod",  # own UTS ns; the pod's namespaces and /dev/shm (guest/sandbox.py)
            *(("--netns", str(self.netns)) if self.netns is not None else ()),
        ]

    def use_network(self, request: PodNetworkRequest) -> None:
        """The agent, and so every container of the pod, joins the pod's netns (as runc would)."""
        check_netns_path(request.netns)
        self.netns = request.netns
        log.info("local sandbox %s: the agent joins %s", self.spec.sandbox_id, request.netns)

    async def start(self) -> None:
        log.warning("local sandbox: containers are NOT isolated in a VM (development/CI only)")
        self.spec.state_dir.mkdir(parents=True, exist_ok=True)
        check_reachable(self.socket_path)  # past sun_path: the agent binds an alias (unixpath)
        self._proc = self._spawn_agent()
        try:
            await self._await_agent()
        except ShimError:
            await self.stop(timeout=2)
            raise
        log.info("local sandbox %s: agent pid %d ready", self.spec.sandbox_id, self.pid)

    def _spawn_agent(self) -> HostProcess:
        """The agent in its own session; output to our stderr (debug) or to agent.log."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        out = 2 if self.spec.debug else os.open(self.spec.state_dir / "agent.log", flags, 0o600)
        try:
            return HostProcess(
                self._argv(), stdout=out, stderr=out, new_session=True, spawner=agent_spawner
            )
        finally:
            if out != 2:
                os.close(out)

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.returncode is not None:
            raise Unavailable(f"agent exited with status {self._proc.returncode}")

    async def share(
        self, container_id: str, name: str, host_path: Path, *, readonly: bool = False
    ) -> str:
        return str(host_path)  # same kernel, same filesystem

    async def unshare(self, container_id: str) -> None:
        return None

    async def wait(self) -> int:
        """The agent's exit status (-signal when killed); 0 if it was never started. An agent
        that died on its own (not stopped) takes its containers with it, as a VM would: they
        are killed and deleted before this returns."""
        if self._proc is None:
            return 0
        status = await self._proc.wait()
        if not self._stopping:
            if self._reaped is None:
                log.error(
                    "local sandbox %s: agent died (status %d): killing its containers",
                    self.spec.sandbox_id,
                    status,
                )
                self._reaped = asyncio.ensure_future(self._delete_leftover_containers())
            await asyncio.shield(self._reaped)
        return status

    def agent_destroyed(self) -> None:
        self._graceful = False  # its SIGTERM path would only repeat DestroySandbox's work

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._drop_answered()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if not self._graceful:
                self._signal_group(signal.SIGKILL)
                await proc.wait()
            else:
                await self._stop_gracefully(proc, timeout)
        await self._delete_leftover_containers()

    async def _stop_gracefully(self, proc: HostProcess, timeout: float) -> None:
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("local sandbox %s: agent ignored SIGTERM", self.spec.sandbox_id)
            self._signal_group(signal.SIGKILL)  # the agent and anything left in its group
            await proc.wait()

    def _signal_group(self, sig: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)

    async def cleanup(self) -> None:
        await self.stop(timeout=5)
        for point in mounts.mount_points_under(self.spec.state_dir):
            unmount_detach(point)
        try:
            mounts.remove_tree(self.spec.state_dir)
        except OSError as exc:
            log.error("local sandbox %s: state left behind: %s", self.spec.sandbox_id, exc)

    async def _delete_leftover_containers(self) -> None:
        """What a crashed agent could not remove: its runc containers and sandbox cgroups."""
        root = self.agent_state / "runc"
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for name in names:
            log.warning(
                "local sandbox %s: deleting leftover container %s", self.spec.sandbox_id, name
            )
            await run_host(["runc", "--root", str(root), "delete", "--force", name])
        cgroupfs.remove_tree(cgroupfs.default_cgroups_path(self.spec.sandbox_id, ""))


register_backend("local", LocalSandbox)
