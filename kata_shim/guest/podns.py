"""The pod's shared namespaces: IPC, UTS and, when asked for, PID (Kata's agent), in a VM guest
and in the local backend's agent on the host alike.

Owns the namespace files under <state dir>/ns and which container holds the pod's PID
namespace. Rules:
* IPC and UTS are made at CreateSandbox by a short-lived thread of the agent: it unshares
  both, sets the pod's hostname in the new UTS namespace and bind-mounts the two
  namespace files (`ns/ipc`, `ns/uts`); the mounts keep them alive, no process does.
  Every container's ipc and uts entries name these files, whatever the host's spec said
  (a path such as /proc/<sandbox pid>/ns/ipc names the VM in a VM, and the agent, in the
  host's namespaces, on the host). A spec without an ipc or uts entry keeps none: it
  shares the agent's (in a VM the VM's, as in Kata; on the host the host's IPC, as runc
  does for a pod that asked for it, and the local agent's own UTS namespace).
* A PID namespace lives only as long as its init, so the pod's is the first container's
  (the sandbox or pause container), as in Kata's agent: its namespace file is pinned at
  `ns/pid` when it is created, unless that container shares the agent's own PID namespace
  (the host's, for the local agent): that one is never made the pod's. A container joins
  it when its CreateContainer (or the CreateSandbox) asked for `sandbox_pidns`; once that
  first container has exited the join fails with FailedPrecondition.
  Any other container gets a PID namespace of its own — never the agent's: in a VM an
  absent pid entry is added, as Kata's agent does; on the host (`host_pid_when_absent`)
  an absent entry stays absent, the host's PID namespace as runc gives it (the pod asked
  for it: `namespace_options.pid = NODE`).
* `release` (DestroySandbox) unmounts and removes every namespace file.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from kata_shim.errors import FailedPrecondition, InvalidArgument
from kata_shim.guest.processes import GuestProcess
from kata_shim.guest.storage import unmount

__all__ = ["SHARED_KINDS", "PodNamespaces", "with_pid_namespace"]

log = logging.getLogger(__name__)

SHARED_KINDS = ("ipc", "uts")  #: made at CreateSandbox, shared by every container
_CLONE_FLAGS = {"ipc": 0x08000000, "uts": 0x04000000}  # CLONE_NEWIPC, CLONE_NEWUTS
_MS_BIND = 4096


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _bind(source: str, target: Path) -> None:
    """mount --bind `source` `target` (a namespace file onto an empty regular file)."""
    target.touch(mode=0o444, exist_ok=True)
    if _libc().mount(os.fsencode(source), os.fsencode(target), None, _MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind {source} on {target}: {os.strerror(err)}")


def _unshare_and_pin(directory: Path, hostname: str) -> None:
    """In the calling thread (a fresh one: unshare changes only it): new IPC and UTS
    namespaces, the hostname set in the new UTS one, both bind-mounted under `directory`."""
    flags = _CLONE_FLAGS["ipc"] | _CLONE_FLAGS["uts"]
    if _libc().unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(IPC|UTS): {os.strerror(err)}")
    if hostname:
        socket.sethostname(hostname)
    tid = threading.get_native_id()
    for kind in SHARED_KINDS:
        _bind(f"/proc/self/task/{tid}/ns/{kind}", directory / kind)


def _in_fresh_thread(directory: Path, hostname: str) -> None:
    """Run `_unshare_and_pin` in a thread of its own that ends with it (a pool thread would
    keep the namespaces and lend them to whatever it runs next)."""
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _unshare_and_pin(directory, hostname)
        except BaseException as exc:  # re-raised in the caller
            failure.append(exc)

    thread = threading.Thread(target=body, name="kata-pod-namespaces", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def with_pid_namespace(namespaces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`namespaces` with a pid entry (a new PID namespace) when it had none."""
    if any(ns.get("type") == "pid" for ns in namespaces):
        return namespaces
    return [*namespaces, {"type": "pid"}]


def _same_pid_namespace(pid: int) -> bool:
    """Process `pid` is in the agent's own PID namespace."""
    return os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat("/proc/self/ns/pid").st_ino


class PodNamespaces:
    """The pod's IPC/UTS namespace files and its PID namespace holder."""

    def __init__(self, directory: Path, *, host_pid_when_absent: bool = False) -> None:
        self.directory = directory
        self.host_pid_when_absent = host_pid_when_absent  # local agent: no pid entry = host's
        self.paths: dict[str, str] = {}  # kind → pinned namespace file, once made
        self.share_pid = False  # CreateSandbox's sandbox_pidns: every container joins
        self._pid_holder: tuple[str, GuestProcess] | None = None

    async def create(self, hostname: str, share_pid: bool) -> None:
        """CreateSandbox: make and pin the pod's IPC and UTS namespaces."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.share_pid = share_pid
        try:
            await asyncio.to_thread(_in_fresh_thread, self.directory, hostname)
        except (OSError, ValueError) as exc:
            self.release()
            if isinstance(exc, ValueError):
                raise InvalidArgument(f"pod hostname {hostname!r}: {exc}") from exc
            raise FailedPrecondition(f"pod namespaces: {exc}") from exc
        self.paths = {kind: str(self.directory / kind) for kind in SHARED_KINDS}
        log.info("pod IPC and UTS namespaces pinned in %s", self.directory)

    def adopt(self, cid: str, init: GuestProcess) -> None:
        """A container was created: the first one's PID namespace becomes the pod's."""
        if self._pid_holder is not None or not self.paths:
            return
        try:
            if _same_pid_namespace(init.pid):
                log.warning("container %s: in the agent's PID namespace, not the pod's", cid)
                return
            _bind(f"/proc/{init.pid}/ns/pid", self.directory / "pid")
        except OSError as exc:
            log.warning("container %s: its PID namespace is not the pod's: %s", cid, exc)
            return
        self._pid_holder = (cid, init)
        self.paths["pid"] = str(self.directory / "pid")
        log.info("container %s (pid %d) holds the pod's PID namespace", cid, init.pid)

    def apply(
        self, cid: str, namespaces: list[dict[str, Any]], join_pid: bool
    ) -> list[dict[str, Any]]:
        """The container's namespaces: ipc/uts → the pod's; pid → the pod's when
        `join_pid` (or CreateSandbox asked for it), else a new one (on the host, none
        when the spec has none)."""
        join_pid = join_pid or self.share_pid
        if join_pid or not self.host_pid_when_absent:
            namespaces = with_pid_namespace(namespaces)
        out: list[dict[str, Any]] = []
        for ns in namespaces:
            kind = str(ns.get("type", ""))
            if kind in SHARED_KINDS and kind in self.paths:
                out.append({"type": kind, "path": self.paths[kind]})
            elif kind == "pid":
                out.append({"type": "pid", **self._pid_path(cid, join_pid)})
            else:
                out.append(ns)
        return out

    def _pid_path(self, cid: str, join: bool) -> dict[str, str]:
        if not join:
            return {}
        if self._pid_holder is None:  # the first container: it makes the pod's
            log.info("container %s: first of the pod, its PID namespace becomes the pod's", cid)
            return {}
        holder, init = self._pid_holder
        if not init.running:
            raise FailedPrecondition(
                f"container {cid}: the pod's PID namespace is gone: its first container "
                f"{holder} has exited; recreate the pod (or do not share the PID namespace)"
            )
        return {"path": self.paths["pid"]}

    def release(self) -> None:
        """Unmount and remove every namespace file (DestroySandbox)."""
        for kind in (*SHARED_KINDS, "pid"):
            path = self.directory / kind
            try:
                unmount(path)
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("pod namespace file %s not released: %s", path, exc)
        self.paths = {}
        self._pid_holder = None
        self.share_pid = False
