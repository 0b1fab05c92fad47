"""The agent's container table and the container lifecycle calls on it.

Owns the table (id → GuestContainer), each container's runc bundle under
<state dir>/containers/<id>, and the runc calls that create, start, pause,
resume, update and delete it. Storages, the console dir, the OOM queue and
the cgroup parent belong to the sandbox (guest.sandbox.GuestSandbox).
Unknown ids → NotFound, duplicates → AlreadyExists, wrong state →
FailedPrecondition (guest.states). The init process is addressed by exec id
"" or by the container id (what Kata's Go runtime sends). Each container's
lifecycle calls run under its lock; waits and stream calls do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kata_shim import mounts
from kata_shim.errors import AlreadyExists, DeadlineExceeded, FailedPrecondition, NotFound
from kata_shim.guest import bundle, cgroups
from kata_shim.guest.container import GuestContainer
from kata_shim.guest.oom import OomWatch
from kata_shim.guest.processes import GuestProcess, launch, write_json
from kata_shim.guest.reaper import Reaper
from kata_shim.guest.runc import Runc
from kata_shim.guest.sandbox import GuestSandbox
from kata_shim.guest.states import ContainerState, Op
from kata_shim.guest.storage import StorageSpec
from kata_shim.proto import oci_pb2

__all__ = ["ContainerTable"]

log = logging.getLogger(__name__)

#: the runc call behind each plain lifecycle op (StartContainer, PauseContainer, ResumeContainer)
_RUNC_CALLS: dict[Op, Callable[[Runc, str], Awaitable[None]]] = {
    Op.START: Runc.start,
    Op.PAUSE: Runc.pause,
    Op.RESUME: Runc.resume,
}


def _remove_bundle(path: Path) -> None:
    """Delete a bundle directory, but never through a mount below it."""
    try:
        mounts.remove_tree(path)
    except OSError as exc:
        log.error("bundle %s not removed: %s", path, exc)


class ContainerTable:
    """The containers of the sandbox, by id, from CreateContainer to RemoveContainer."""

    def __init__(self, state_dir: Path, sandbox: GuestSandbox, runc: Runc, reaper: Reaper) -> None:
        self.state_dir = state_dir
        self.sandbox = sandbox
        self.runc = runc
        self.reaper = reaper
        self._table: dict[str, GuestContainer] = {}
        self._creating: set[str] = set()  # ids reserved by an in-flight CreateContainer

    # lookup -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._table))

    def get(self, cid: str) -> GuestContainer:
        found = self._table.get(cid)
        if found is None:
            raise NotFound(f"container {cid} not found")
        return found

    def process(self, cid: str, exec_id: str) -> GuestProcess:
        """The init (exec id "" or `cid`) or an exec of container `cid`."""
        container = self.get(cid)
        if exec_id in ("", cid):
            return container.init
        found = container.execs.get(exec_id)
        if found is None:
            raise NotFound(f"exec {exec_id} of container {cid} not found")
        return found

    # create -------------------------------------------------------------------
    async def create(
        self,
        cid: str,
        spec: oci_pb2.Spec,
        storages: Sequence[StorageSpec] = (),
        sandbox_pidns: bool = False,
    ) -> GuestContainer:
        """Mount the container's storages, write its bundle and `runc create` it in the
        pod's namespaces (`sandbox_pidns`: in the pod's PID namespace too)."""
        bundle.validate_id("container", cid)
        if cid in self._table or cid in self._creating:
            raise AlreadyExists(f"container {cid} already exists")
        self._creating.add(cid)
        path = self.state_dir / "containers" / cid
        try:
            await self.sandbox.add_storages(cid, storages)
            config = bundle.container_config(
                spec,
                sandbox_id=self.sandbox.id,
                container_id=cid,
                vm_roots=self.sandbox.vm_roots(cid),
                shm=self.sandbox.shm,
            )
            linux = config["linux"]
            linux["namespaces"] = self.sandbox.container_namespaces(
                cid, linux.get("namespaces", []), sandbox_pidns
            )
            _remove_bundle(path)
            path.mkdir(parents=True)
            container = await self._create_in(path, cid, config)
        except BaseException:
            await self._undo_create(cid, path)
            raise
        finally:
            self._creating.discard(cid)
        self._table[cid] = container
        self.sandbox.container_created(cid, container.init)
        container.log.info("created (pid %d)", container.init.pid)
        return container

    async def _undo_create(self, cid: str, path: Path) -> None:
        try:
            await self.runc.delete(cid)
        except Exception as exc:  # the original error matters more
            log.error("[%s] cleaning up a failed create: %s", cid, exc)
        self.sandbox.storages.release(cid)
        _remove_bundle(path)

    async def _create_in(self, path: Path, cid: str, config: dict[str, Any]) -> GuestContainer:
        write_json(path / "config.json", config)
        pid_file = path / "init.pid"

        async def start(stdio: Mapping[int, int], console: Path | None) -> None:
            await self.runc.create(cid, path, pid_file, stdio, console)

        console = self.sandbox.console_path(bool(config["process"].get("terminal")))
        init = await launch(self.reaper, (cid, ""), pid_file, console, start)
        try:
            paths = cgroups.cgroup_paths(init.pid)
        except OSError as exc:
            init.log.warning("no cgroup paths: %s", exc)
            paths = {}
        container = GuestContainer(cid, path, init, paths)
        try:
            container.oom = OomWatch(paths, lambda: self.sandbox.notify_oom(cid))
        except OSError as exc:
            container.log.warning("no OOM notifications: %s", exc)
        container.watch_exit()
        return container

    # lifecycle ----------------------------------------------------------------
    async def change(self, cid: str, op: Op) -> None:
        """StartContainer, PauseContainer or ResumeContainer: the runc call, then the state."""
        container = self.get(cid)
        async with container.lock:
            container.check(op)
            await _RUNC_CALLS[op](self.runc, cid)
            container.apply(op)

    async def update(self, cid: str, resources: dict[str, Any]) -> None:
        container = self.get(cid)
        async with container.lock:
            container.check(Op.UPDATE)
            path = write_json(container.bundle / "resources.json", resources)
            await self.runc.update(cid, path)

    def stats(self, cid: str) -> Any:
        return cgroups.read_stats(self.get(cid).cgroups)

    # remove -------------------------------------------------------------------
    async def remove(self, cid: str, timeout: float | None) -> None:
        """Kill everything in the container (if running), wait up to `timeout`, delete it."""
        container = self.get(cid)
        async with container.lock:
            if container.init.running:
                with contextlib.suppress(NotFound, FailedPrecondition):
                    await self.runc.kill(cid, signal.SIGKILL, all_processes=True)
                try:
                    await asyncio.wait_for(asyncio.shield(container.init.exited), timeout)
                except TimeoutError as exc:
                    raise DeadlineExceeded(f"container {cid} did not stop in {timeout}s") from exc
            container.record_exit()
            if container.state is not ContainerState.DELETED:  # else a concurrent remove won
                container.check(Op.DELETE)
                await self._release(container)
                container.apply(Op.DELETE)

    async def _release(self, container: GuestContainer) -> None:
        for proc in list(container.execs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.close()
        container.init.close()
        if container.oom is not None:
            container.oom.close()
        await self.runc.delete(container.id)
        self.sandbox.storages.release(container.id)
        _remove_bundle(container.bundle)
        del self._table[container.id]
        container.log.info("removed")

    async def remove_all(self, timeout: float = 10.0) -> None:
        """Remove every container (DestroySandbox, agent shutdown), whatever fails."""
        for cid in self:
            try:
                await self.remove(cid, timeout)
            except Exception:  # keep tearing down the rest
                log.exception("removing container %s", cid)
