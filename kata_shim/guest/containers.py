"""The agent's containers and processes: everything the AgentService RPCs act on.

Owns the container table (id → Container with its init and exec processes),
their runc bundles under the state dir, their OOM watches, the sandbox's and
containers' storages, and the sandbox's cgroup parent. Unknown ids →
NotFound, duplicates → AlreadyExists, wrong state → FailedPrecondition. The
init process is addressed by exec id "" or by the container id (what Kata's Go
runtime sends). Each container's lifecycle calls (start, exec, pause, resume,
update, remove) are serialised by its lock; waits and stream calls are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kata_shim import mounts
from kata_shim.errors import AlreadyExists, DeadlineExceeded, FailedPrecondition, NotFound
from kata_shim.guest import bundle, cgroups, hostpaths
from kata_shim.guest.oom import OomWatch
from kata_shim.guest.processes import IdLogger, Process, Starter, launch, write_json
from kata_shim.guest.reaper import Reaper
from kata_shim.guest.runc import Runc
from kata_shim.guest.storage import Storages, StorageSpec
from kata_shim.proto import oci_pb2

__all__ = ["Container", "ContainerManager", "State"]

log = logging.getLogger(__name__)

OOM_QUEUE = 1024
_SUN_PATH_MAX = 107


class State(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass
class Container:
    id: str
    bundle: Path
    init: Process
    cgroups: dict[str, Path]
    state: State = State.CREATED  # guarded by `lock` (except the exit callback → STOPPED)
    execs: dict[str, Process] = field(default_factory=dict)
    oom: OomWatch | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    log: IdLogger = field(init=False)

    def __post_init__(self) -> None:
        self.log = IdLogger(log, {"container": self.id, "exec": ""})

    def require(self, *states: State) -> None:
        if self.state not in states:
            wanted = "/".join(s.value for s in states)
            raise FailedPrecondition(f"container {self.id} is {self.state.value}, not {wanted}")


def _status_field(pid: int, name: str) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def upgrade_sigterm(pid: int) -> bool:
    """True for a PID 1 of its namespace without a SIGTERM handler (it would ignore it)."""
    nspid = _status_field(pid, "NSpid").split()
    caught = int(_status_field(pid, "SigCgt") or "0", 16)
    return bool(nspid) and nspid[-1] == "1" and not caught & (1 << (signal.SIGTERM - 1))


def _remove_bundle(path: Path) -> None:
    """Delete a bundle directory, but never through a mount below it."""
    try:
        mounts.remove_tree(path)
    except OSError as exc:
        log.error("bundle %s not removed: %s", path, exc)


def _console_dir(state_dir: Path) -> Path:
    """Where console sockets go: a sun_path holds 107 bytes, so stay short."""
    candidate = state_dir / "tty"
    if len(os.fsencode(candidate)) + 18 > _SUN_PATH_MAX:
        return Path(tempfile.mkdtemp(prefix="kata-agent-tty-"))
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


class ContainerManager:
    def __init__(
        self, state_dir: Path, reaper: Reaper, runc_binary: str = "runc", sandbox_id: str = ""
    ) -> None:
        self.state_dir = state_dir
        self.reaper = reaper
        self.runc = Runc(state_dir / "runc", reaper, runc_binary)
        self.sandbox_id = sandbox_id or "default"
        self.sandbox_created = False
        self.containers: dict[str, Container] = {}
        self._creating: set[str] = set()  # ids reserved by an in-flight CreateContainer
        self.storages = Storages(reaper)
        self.oom_events: asyncio.Queue[str] = asyncio.Queue(OOM_QUEUE)
        self.console_dir = _console_dir(state_dir)
        self.in_vm = False  # main: host paths in specs are refused/dropped (guest/hostpaths.py)

    # lookup -----------------------------------------------------------------
    def container(self, cid: str) -> Container:
        found = self.containers.get(cid)
        if found is None:
            raise NotFound(f"container {cid} not found")
        return found

    def process(self, cid: str, exec_id: str) -> Process:
        container = self.container(cid)
        if exec_id in ("", cid):
            return container.init
        found = container.execs.get(exec_id)
        if found is None:
            raise NotFound(f"exec {exec_id} of container {cid} not found")
        return found

    def _vm_roots(self, cid: str) -> list[str] | None:
        """In a VM: the shared directory and this sandbox's and container's storages."""
        if not self.in_vm:
            return None
        owned = [*self.storages.owned_by(""), *self.storages.owned_by(cid)]
        return [hostpaths.SHARED_DIR, *(str(path) for path in owned)]

    def _console(self, terminal: bool) -> Path | None:
        return self.console_dir / f"{os.urandom(6).hex()}.sock" if terminal else None

    # sandbox ----------------------------------------------------------------
    async def create_sandbox(self, sandbox_id: str, storages: list[StorageSpec]) -> None:
        if self.sandbox_created:
            raise AlreadyExists(f"sandbox {self.sandbox_id} already created")
        if sandbox_id:
            self.sandbox_id = bundle.validate_id("sandbox", sandbox_id)
        self.sandbox_created = True
        for storage in storages:
            await self.storages.add("", storage)
        log.info("sandbox %s created (%d storages)", self.sandbox_id, len(storages))

    async def destroy_sandbox(self, timeout: float = 10.0) -> None:
        """Remove every container, release all storages and the sandbox's cgroups."""
        for cid in list(self.containers):
            try:
                await self.remove(cid, timeout)
            except Exception:  # keep tearing down the rest
                log.exception("removing container %s", cid)
        self.storages.release_all()
        left = cgroups.remove_tree(f"/{bundle.CGROUP_ROOT}/{self.sandbox_id}")
        if left:
            log.warning("sandbox %s: cgroups still in use: %s", self.sandbox_id, left)
        self.sandbox_created = False
        log.info("sandbox %s destroyed", self.sandbox_id)

    # containers ---------------------------------------------------------------
    async def create(
        self, cid: str, spec: oci_pb2.Spec, storages: Sequence[StorageSpec] = ()
    ) -> Container:
        """Mount the container's storages, write its bundle and `runc create` it."""
        bundle.validate_id("container", cid)
        if cid in self.containers or cid in self._creating:
            raise AlreadyExists(f"container {cid} already exists")
        self._creating.add(cid)
        path = self.state_dir / "containers" / cid
        try:
            for storage in storages:
                await self.storages.add(cid, storage)
            config = bundle.container_config(
                spec, sandbox_id=self.sandbox_id, container_id=cid, vm_roots=self._vm_roots(cid)
            )
            _remove_bundle(path)
            path.mkdir(parents=True)
            container = await self._create_in(path, cid, config)
        except BaseException:
            await self._undo_create(cid, path)
            raise
        finally:
            self._creating.discard(cid)
        self.containers[cid] = container
        container.log.info("created (pid %d)", container.init.pid)
        return container

    async def _undo_create(self, cid: str, path: Path) -> None:
        try:
            await self.runc.delete(cid)
        except Exception as exc:  # the original error matters more
            log.error("[%s] cleaning up a failed create: %s", cid, exc)
        self.storages.release(cid)
        _remove_bundle(path)

    async def _create_in(self, path: Path, cid: str, config: dict[str, Any]) -> Container:
        write_json(path / "config.json", config)
        pid_file = path / "init.pid"

        async def start(stdio: Mapping[int, int], console: Path | None) -> None:
            await self.runc.create(cid, path, pid_file, stdio, console)

        console = self._console(bool(config["process"].get("terminal")))
        init = await launch(self.reaper, (cid, ""), pid_file, console, start)
        try:
            paths = cgroups.cgroup_paths(init.pid)
        except OSError as exc:
            init.log.warning("no cgroup paths: %s", exc)
            paths = {}
        container = Container(cid, path, init, paths)
        try:
            container.oom = OomWatch(paths, lambda: self._oom(cid))
        except OSError as exc:
            container.log.warning("no OOM notifications: %s", exc)
        init.exited.add_done_callback(lambda _f: self._init_exited(container))
        return container

    def _oom(self, cid: str) -> None:
        log.warning("[%s] OOM kill in the container's memory cgroup", cid)
        if self.oom_events.full():
            self.oom_events.get_nowait()  # drop the oldest
        self.oom_events.put_nowait(cid)

    @staticmethod
    def _init_exited(container: Container) -> None:
        container.state = State.STOPPED
        container.log.info("init exited with %d", container.init.exited.result())

    async def start(self, cid: str) -> None:
        container = self.container(cid)
        async with container.lock:
            container.require(State.CREATED)
            await self.runc.start(cid)
            if container.state is State.CREATED:
                container.state = State.RUNNING

    async def pause(self, cid: str) -> None:
        container = self.container(cid)
        async with container.lock:
            container.require(State.RUNNING)
            await self.runc.pause(cid)
            container.state = State.PAUSED

    async def resume(self, cid: str) -> None:
        container = self.container(cid)
        async with container.lock:
            container.require(State.PAUSED)
            await self.runc.resume(cid)
            container.state = State.RUNNING

    async def update(self, cid: str, resources: dict[str, Any]) -> None:
        container = self.container(cid)
        async with container.lock:
            container.require(State.CREATED, State.RUNNING, State.PAUSED)
            path = write_json(container.bundle / "resources.json", resources)
            await self.runc.update(cid, path)

    def stats(self, cid: str) -> Any:
        return cgroups.read_stats(self.container(cid).cgroups)

    async def remove(self, cid: str, timeout: float | None) -> None:
        """Kill everything in the container (if running), wait up to `timeout`, delete it."""
        container = self.container(cid)
        async with container.lock:
            if container.init.running:
                with contextlib.suppress(NotFound, FailedPrecondition):
                    await self.runc.kill(cid, signal.SIGKILL, all_processes=True)
                try:
                    await asyncio.wait_for(asyncio.shield(container.init.exited), timeout)
                except TimeoutError as exc:
                    raise DeadlineExceeded(f"container {cid} did not stop in {timeout}s") from exc
            if self.containers.get(cid) is container:
                await self._release(container)

    async def _release(self, container: Container) -> None:
        for proc in list(container.execs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.close()
        container.init.close()
        if container.oom is not None:
            container.oom.close()
        await self.runc.delete(container.id)
        self.storages.release(container.id)
        _remove_bundle(container.bundle)
        del self.containers[container.id]
        container.log.info("removed")

    # processes ----------------------------------------------------------------
    async def exec(self, cid: str, exec_id: str, config: dict[str, Any]) -> Process:
        bundle.validate_id("exec", exec_id)
        container = self.container(cid)
        async with container.lock:
            if exec_id == cid or exec_id in container.execs:
                raise AlreadyExists(f"exec {exec_id} of container {cid} already exists")
            container.require(State.RUNNING)
            spec = write_json(container.bundle / f"exec-{exec_id}.json", config)
            pid_file = container.bundle / f"exec-{exec_id}.pid"
            start: Starter = lambda stdio, console: self.runc.exec(  # noqa: E731
                cid, spec, pid_file, stdio, console
            )
            console = self._console(bool(config.get("terminal")))
            try:
                proc = await launch(self.reaper, (cid, exec_id), pid_file, console, start)
            finally:
                spec.unlink(missing_ok=True)
                pid_file.unlink(missing_ok=True)
            container.execs[exec_id] = proc
        proc.log.info("started (pid %d)", proc.pid)
        return proc

    async def signal(self, cid: str, exec_id: str, sig: int) -> None:
        """Signal one process; exec id "" with SIGKILL kills every process in the container."""
        container = self.container(cid)
        proc = self.process(cid, exec_id)
        if not proc.running:
            raise NotFound(f"process {proc.name} already exited")
        if sig == 0:
            return
        if proc is container.init and exec_id == "" and sig == signal.SIGKILL:
            await self.runc.kill(cid, sig, all_processes=True)
            return
        if proc is container.init and sig == signal.SIGTERM and upgrade_sigterm(proc.pid):
            proc.log.info("PID 1 has no SIGTERM handler: sending SIGKILL")
            sig = signal.SIGKILL
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)

    async def wait(self, cid: str, exec_id: str) -> int:
        """Block until the process exits; then release it (exec: forget it)."""
        container = self.container(cid)
        proc = self.process(cid, exec_id)
        code = await proc.wait()
        if proc is not container.init and container.execs.get(proc.exec_id) is proc:
            del container.execs[proc.exec_id]
        return code

    async def write_stdin(self, cid: str, exec_id: str, data: bytes) -> int:
        """Write to stdin; empty data closes it (runtime-rs style)."""
        stdin = self.process(cid, exec_id).stdin()
        if stdin is None or stdin.closed:
            raise FailedPrecondition(f"stdin of {exec_id or cid} is closed")
        if not data:
            stdin.close()
            return 0
        return await stdin.write(data)

    def close_stdin(self, cid: str, exec_id: str) -> None:
        stdin = self.process(cid, exec_id).stdin()
        if stdin is not None:
            stdin.close()
