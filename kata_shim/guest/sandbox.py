"""The sandbox's own resources in the agent, apart from its containers.

Owns the sandbox id and whether CreateSandbox ran, every storage mount (the
sandbox's, owner "", and each container's, reference-counted in Storages),
the OOM event queue GetOOMEvent drains, the sandbox's cgroup parent
(/kata_shim/<sandbox id>), the directory for console sockets (made for the
first terminal; a /tmp/kata-agent-tty-* one, used when the state directory is
too deep for a sun_path, is removed by `destroy`), and whether the agent runs
in a VM (then host paths in specs are confined to `vm_roots`).
The agent stands for a pod (`pod`) in a VM, or on the host as the local
backend's agent (`local_pod`, guest/localpod.py: it has a UTS namespace of its
own, so the hostname it sets is never the host's). For a pod, CreateSandbox
sets the agent's hostname to the pod's and mounts the pod's /dev/shm: one
tmpfs (a sandbox storage) every container binds, and makes the pod's
namespaces (guest/podns.py): IPC and UTS, which every container joins, and the
first container's PID namespace becomes the pod's, joined on request
(sandbox_pidns). An agent that is neither (run by hand on a host) keeps the
spec's namespaces and /dev/shm as they are.
Containers live in guest.containers.ContainerTable, which borrows from here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kata_shim.errors import AlreadyExists, InvalidArgument
from kata_shim.guest import bundle, cgroups, hostpaths
from kata_shim.guest.podns import PodNamespaces, with_pid_namespace
from kata_shim.guest.processes import GuestProcess
from kata_shim.guest.reaper import Reaper
from kata_shim.guest.storage import Storages, StorageSpec
from kata_shim.unixpath import SUN_PATH_MAX

__all__ = ["CONSOLE_TEMP_PREFIX", "OOM_QUEUE", "SHM_OPTIONS", "GuestSandbox"]

log = logging.getLogger(__name__)

OOM_QUEUE = 1024  # OOM events kept for GetOOMEvent; the oldest go first
#: a console directory outside the state directory (too deep for a sun_path): ours to remove
CONSOLE_TEMP_PREFIX = "kata-agent-tty-"
#: the pod's /dev/shm tmpfs: what CRI and runc give a container's own /dev/shm
SHM_OPTIONS = ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")


def _console_dir(state_dir: Path) -> tuple[Path, bool]:
    """Where console sockets go (made now), and whether it is a temporary directory of
    ours: a sun_path holds 107 bytes, so a deep state directory gets a short one."""
    candidate = state_dir / "tty"
    if len(os.fsencode(candidate)) + 18 > SUN_PATH_MAX:  # + /<12 hex>.sock
        return Path(tempfile.mkdtemp(prefix=CONSOLE_TEMP_PREFIX)), True
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate, False


class GuestSandbox:
    """The pod the agent serves: its id, storages, OOM queue, cgroups and console dir."""

    def __init__(
        self,
        state_dir: Path,
        reaper: Reaper,
        sandbox_id: str = "",
        *,
        in_vm: bool = False,
        local_pod: bool = False,
    ) -> None:
        self.id = sandbox_id or "default"
        self.created = False
        self.storages = Storages(reaper)
        self.oom_events: asyncio.Queue[str] = asyncio.Queue(OOM_QUEUE)
        self._state_dir = state_dir
        self._console: tuple[Path, bool] | None = None  # made for the first terminal
        self.in_vm = in_vm  # host paths in specs are refused/dropped (guest/hostpaths.py)
        self.pod = in_vm or local_pod  # hostname, /dev/shm and namespaces are the pod's
        self.shm_dir = state_dir / "shm"
        self.shm: str | None = None  # the pod's /dev/shm while mounted
        # made at create; on the host a spec without a pid entry keeps the host's (as runc)
        self.namespaces = PodNamespaces(state_dir / "ns", host_pid_when_absent=not in_vm)

    async def create(
        self,
        sandbox_id: str,
        storages: Iterable[StorageSpec],
        hostname: str = "",
        share_pid: bool = False,
    ) -> None:
        """CreateSandbox: name the sandbox (once) and mount its storages; for a pod also
        set the pod's hostname, mount the pod's /dev/shm and make its namespaces
        (`share_pid`: every container joins the pod's PID namespace)."""
        if self.created:
            raise AlreadyExists(f"sandbox {self.id} already created")
        if sandbox_id:
            self.id = bundle.validate_id("sandbox", sandbox_id)
        if self.pod and hostname:
            _set_hostname(hostname)
        self.created = True
        count = await self.add_storages("", storages)
        if self.pod:
            shm = StorageSpec("ephemeral", "shm", "tmpfs", str(self.shm_dir), SHM_OPTIONS)
            await self.storages.add("", shm)
            self.shm = str(self.shm_dir)
            await self.namespaces.create(hostname, share_pid)
        log.info("sandbox %s created (%d storages, hostname %r)", self.id, count, hostname)

    def destroy(self) -> None:
        """Release every storage, the sandbox's cgroups and a temporary console directory
        (its containers are gone). Idempotent; the console directory goes even on errors."""
        try:
            self.storages.release_all()  # the pod's /dev/shm too
            self.shm = None
            self.namespaces.release()
            left = cgroups.remove_tree(f"/{bundle.CGROUP_ROOT}/{self.id}")
            if left:
                log.warning("sandbox %s: cgroups still in use: %s", self.id, left)
            self.created = False
        finally:
            self._remove_console_dir()
        log.info("sandbox %s destroyed", self.id)

    @property
    def console_dir(self) -> Path:
        """The directory of console sockets, made on first use."""
        if self._console is None:
            self._console = _console_dir(self._state_dir)
        return self._console[0]

    def _remove_console_dir(self) -> None:
        """A temporary console directory goes (a later terminal makes a fresh one)."""
        console, self._console = self._console, None
        if console is not None and console[1]:
            try:
                shutil.rmtree(console[0])
            except OSError as exc:
                log.warning("sandbox %s: console directory left behind: %s", self.id, exc)

    async def add_storages(self, owner: str, storages: Iterable[StorageSpec]) -> int:
        """Mount `storages` for `owner` ("" = the sandbox, else a container id)."""
        count = 0
        for storage in storages:
            await self.storages.add(owner, storage)
            count += 1
        return count

    def vm_roots(self, cid: str) -> list[str] | None:
        """In a VM: the shared directory and this sandbox's and container's storages."""
        if not self.in_vm:
            return None
        owned = [*self.storages.owned_by(""), *self.storages.owned_by(cid)]
        return [hostpaths.SHARED_DIR, *(str(path) for path in owned)]

    def container_namespaces(
        self, cid: str, namespaces: list[dict[str, Any]], join_pid: bool
    ) -> list[dict[str, Any]]:
        """The namespaces of container `cid`'s runc config: for a pod its IPC and UTS and
        (`join_pid`) PID namespace (guest/podns.py); else as the spec has them (a PID
        namespace of its own when `join_pid`: there is no pod one)."""
        if self.pod and self.created:
            return self.namespaces.apply(cid, namespaces, join_pid)
        if not join_pid:
            return namespaces
        log.info("container %s: no pod PID namespace outside a pod; a new one", cid)
        return with_pid_namespace(namespaces)

    def container_created(self, cid: str, init: GuestProcess) -> None:
        """A container exists (runc create done): the first one holds the pod's PID ns."""
        if self.pod and self.created:
            self.namespaces.adopt(cid, init)

    def console_path(self, terminal: bool) -> Path | None:
        """A fresh console socket path for a terminal process, else None."""
        return self.console_dir / f"{os.urandom(6).hex()}.sock" if terminal else None

    def notify_oom(self, cid: str) -> None:
        """Queue an OOM event for GetOOMEvent, dropping the oldest when full."""
        log.warning("[%s] OOM kill in the container's memory cgroup", cid)
        if self.oom_events.full():
            self.oom_events.get_nowait()  # drop the oldest
        self.oom_events.put_nowait(cid)


def _set_hostname(hostname: str) -> None:
    """The agent's hostname: the pod's (in a VM, or in the local agent's own UTS namespace)."""
    try:
        socket.sethostname(hostname)
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"pod hostname {hostname!r}: {exc}") from exc
    log.info("hostname set to %s", hostname)
