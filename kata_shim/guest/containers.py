"""The agent's containers and processes: everything the AgentService RPCs act on.

Owns the container table (id → Container with its init and exec processes),
their runc bundles under the state dir, OOM watches and mounted sandbox
storages. Unknown ids → NotFound, duplicates → AlreadyExists, wrong state →
FailedPrecondition. The init process is addressed by exec id "" or by the
container id (what Kata's Go runtime sends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kata_shim.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from kata_shim.guest import spawn
from kata_shim.guest.cgroups import OomWatch, cgroup_paths, read_stats
from kata_shim.guest.process import Process, exec_starter, init_starter, launch, write_json
from kata_shim.guest.reaper import Reaper
from kata_shim.guest.runc import Runc
from kata_shim.guest.stdio import OutputStream
from kata_shim.mounts import remove_tree

__all__ = ["Container", "ContainerManager"]

log = logging.getLogger(__name__)


@dataclass
class Container:
    id: str
    bundle: Path
    init: Process
    status: str = "created"  # created | running | paused | stopped
    execs: dict[str, Process] = field(default_factory=dict)
    cgroups: dict[str, Path] = field(default_factory=dict)
    oom: OomWatch | None = None


def _handles(pid: int, sig: int) -> bool:
    """Whether `pid` has a handler installed for `sig` (SigCgt in /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


class ContainerManager:
    def __init__(self, state_dir: Path, reaper: Reaper, runc_binary: str = "runc") -> None:
        self.state_dir = state_dir
        self.reaper = reaper
        self.runc = Runc(state_dir / "runc", reaper, runc_binary)
        self.sandbox_id = ""
        self.containers: dict[str, Container] = {}
        self.oom_events: asyncio.Queue[str] = asyncio.Queue()
        self._mounts: list[Path] = []

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

    # lifecycle ----------------------------------------------------------------
    async def create(self, cid: str, spec: dict[str, Any]) -> Container:
        if not cid or "/" in cid or cid.startswith("."):
            raise InvalidArgument(f"invalid container id {cid!r}")
        if cid in self.containers:
            raise AlreadyExists(f"container {cid} already exists")
        if not spec.get("root", {}).get("path"):
            raise InvalidArgument(f"container {cid}: spec has no root.path")
        bundle = self.state_dir / "containers" / cid
        bundle.mkdir(parents=True, exist_ok=False)
        try:
            return await self._create_in(bundle, cid, spec)
        except BaseException:
            await self.runc.delete(cid)
            remove_tree(bundle)
            raise

    async def _create_in(self, bundle: Path, cid: str, spec: dict[str, Any]) -> Container:
        linux = spec.setdefault("linux", {})
        linux.setdefault("cgroupsPath", f"/kata_shim/{self.sandbox_id or 'sandbox'}/{cid}")
        write_json(bundle / "config.json", spec)
        terminal = bool(spec.get("process", {}).get("terminal"))
        starter = init_starter(self.runc, cid, bundle, bundle / "init.pid")
        init = await launch(self.reaper, bundle, cid, "", terminal, starter)
        container = Container(cid, bundle, init, cgroups=cgroup_paths(init.pid))
        try:
            container.oom = OomWatch(container.cgroups, lambda: self._oom(cid))
        except OSError as exc:
            log.warning("container %s: no OOM notifications: %s", cid, exc)
        self.containers[cid] = container
        init.exited.add_done_callback(lambda _f: self._init_exited(container))
        log.info("created container %s (pid %d)", cid, init.pid)
        return container

    def _oom(self, cid: str) -> None:
        log.warning("container %s: OOM kill", cid)
        self.oom_events.put_nowait(cid)

    @staticmethod
    def _init_exited(container: Container) -> None:
        container.status = "stopped"

    async def start(self, cid: str) -> None:
        container = self.container(cid)
        if container.status != "created":
            raise FailedPrecondition(f"cannot start container {cid} in state {container.status}")
        await self.runc.start(cid)
        if container.status == "created":
            container.status = "running"

    async def exec(self, cid: str, exec_id: str, process_json: dict[str, Any]) -> Process:
        container = self.container(cid)
        if exec_id in ("", cid) or exec_id in container.execs:
            raise AlreadyExists(f"exec {exec_id!r} of container {cid} already exists")
        if container.status not in ("running", "paused") or not container.init.running:
            raise FailedPrecondition(f"cannot exec in container {cid} in state {container.status}")
        path = write_json(container.bundle / f"exec-{exec_id}.json", process_json)
        starter = exec_starter(self.runc, cid, path, container.bundle / f"{exec_id}.pid")
        terminal = bool(process_json.get("terminal"))
        proc = await launch(self.reaper, container.bundle, cid, exec_id, terminal, starter)
        container.execs[exec_id] = proc
        return proc

    async def signal(self, cid: str, exec_id: str, sig: int) -> None:
        container = self.container(cid)
        proc = self.process(cid, exec_id)
        if not proc.running:
            raise NotFound(f"process {exec_id or cid} of container {cid} already exited")
        if sig == 0:
            return
        if proc is not container.init:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            return
        if sig == signal.SIGTERM and not _handles(proc.pid, sig):
            sig = signal.SIGKILL  # PID 1 ignores unhandled SIGTERM; do what the user meant
        await self.runc.kill(cid, sig, all_processes=exec_id == "" and sig == signal.SIGKILL)

    async def wait(self, cid: str, exec_id: str) -> int:
        proc = self.process(cid, exec_id)
        code = await asyncio.shield(proc.exited)
        await proc.io.close()
        container = self.containers.get(cid)
        if container is not None and proc is not container.init:
            container.execs.pop(proc.exec_id, None)
        return code

    def output(self, cid: str, exec_id: str, stderr: bool) -> OutputStream | None:
        io = self.process(cid, exec_id).io
        return io.stderr if stderr else io.stdout

    async def write_stdin(self, cid: str, exec_id: str, data: bytes) -> int:
        stdin = self.process(cid, exec_id).io.stdin
        if stdin is None or stdin.closed:
            raise FailedPrecondition(f"stdin of {exec_id or cid} is closed")
        if not data:
            await stdin.close()
            return 0
        return await stdin.write(data)

    async def close_stdin(self, cid: str, exec_id: str) -> None:
        stdin = self.process(cid, exec_id).io.stdin
        if stdin is not None:
            await stdin.close()

    def resize(self, cid: str, exec_id: str, rows: int, columns: int) -> None:
        proc = self.process(cid, exec_id)
        if proc.io.tty_master is None:
            raise Unavailable("no tty")
        proc.io.resize(rows, columns)

    async def pause(self, cid: str) -> None:
        container = self.container(cid)
        if container.status != "running":
            raise FailedPrecondition(f"cannot pause container {cid} in state {container.status}")
        await self.runc.pause(cid)
        container.status = "paused"

    async def resume(self, cid: str) -> None:
        container = self.container(cid)
        if container.status != "paused":
            raise FailedPrecondition(f"cannot resume container {cid} in state {container.status}")
        await self.runc.resume(cid)
        container.status = "running"

    async def update(self, cid: str, resources: dict[str, Any]) -> None:
        container = self.container(cid)
        path = write_json(container.bundle / "resources.json", resources)
        await self.runc.update(cid, path)

    def stats(self, cid: str) -> Any:
        return read_stats(self.container(cid).cgroups)

    async def remove(self, cid: str, timeout: float | None) -> None:
        container = self.container(cid)
        if container.init.running:
            with contextlib.suppress(NotFound, FailedPrecondition):
                await self.runc.kill(cid, signal.SIGKILL, all_processes=True)
            try:
                await asyncio.wait_for(asyncio.shield(container.init.exited), timeout)
            except TimeoutError as exc:
                raise DeadlineExceeded(f"container {cid} did not stop in {timeout}s") from exc
        await self._release(container)

    async def _release(self, container: Container) -> None:
        for proc in list(container.execs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.io.close()
        await container.init.io.close()
        if container.oom is not None:
            container.oom.close()
        await self.runc.delete(container.id)
        remove_tree(container.bundle)
        self.containers.pop(container.id, None)
        log.info("removed container %s", container.id)

    # sandbox ------------------------------------------------------------------
    async def mount_storage(
        self, source: str, target: str, fstype: str, options: list[str]
    ) -> None:
        where = Path(target)
        where.mkdir(parents=True, exist_ok=True)
        argv = [
            "mount",
            "-t",
            fstype,
            *(["-o", ",".join(options)] if options else []),
            source,
            target,
        ]
        code, _ = await spawn.run(self.reaper, argv, timeout=30)
        if code != 0:
            raise FailedPrecondition(f"mount {source} on {target} ({fstype}) failed: exit {code}")
        self._mounts.append(where)

    async def destroy(self, timeout: float = 10.0) -> None:
        """Remove every container and unmount sandbox storages."""
        for cid in list(self.containers):
            try:
                await self.remove(cid, timeout)
            except Exception:  # keep tearing down the rest
                log.exception("removing container %s", cid)
        for where in reversed(self._mounts):
            await spawn.run(self.reaper, ["umount", "-l", str(where)], timeout=30)
        self._mounts.clear()
