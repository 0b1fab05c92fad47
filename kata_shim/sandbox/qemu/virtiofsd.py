"""One sandbox's virtiofsd (`shared_fs = "virtio-fs"`): started, watched and reaped here.

QEMU 7.2's C virtiofsd serves the sandbox's share directory (sandbox/share.py)
to QEMU's vhost-user-fs device over a unix socket we create, bind (0600, in
the root-only state dir) and listen on before either process starts; the
daemon inherits the listening fd (`--fd`), so QEMU can connect as soon as it
runs and nothing polls for a socket path.

Confinement (docs/security.md), the same layers as QEMU's (qemu/confine.py):
* the jail's seccomp filter (qemu/jail.py): no create/chmod with a
  setuid/setgid mode, no character or block device node, and every chown and
  every uid/gid change trapped for the owner guard (qemu/ownerguard.py).
  virtiofsd creates a file as the guest caller's uid/gid (a worker thread
  setresuid/setresgid's to it), so the guard limits those ids, like chown's,
  to owners the pod has; the daemon gets its own guard, fed the same owners;
* `setpriv` with the bounding set `VIRTIOFSD_CAPS`: what virtiofsd needs to
  set up its sandbox (`sys_admin`: new mount, pid and net namespaces and
  pivot_root into the share; `sys_resource`: its file-descriptor limit;
  `setpcap`: libcap-ng, dropping its capabilities, calls readlink without
  it, which virtiofsd's own filter punishes with SIGSYS) and to serve files
  of every owner. No `fsetid` (the kernel strips setuid/setgid
  bits on write and chown), no `mknod`, no `setfcap` (no file capability
  xattr); `-o modcaps` removes those three from the set virtiofsd itself
  keeps; after setup, before it reads a request, its serving process keeps
  only chown, dac_override, fowner, setuid and setgid (bounding set empty),
  and its parent, which only waits for that child, keeps no capability
  (tests/sandbox/qemu/test_virtiofsd.py reads both from /proc);
* `-o sandbox=namespace`: virtiofsd serves from a slave copy of the share
  mounted as its root, with its own /proc; no host path is visible to it.
  The share is made its own shared mount first (`SharedDir.create`), so
  binds made later propagate into that copy — with the flags they were
  staged with (read-only shares are read-only there too);
* `-o no_xattr`: no extended attributes cross the share.

The daemon runs as two processes (a parent and its child, pid 1 of a new pid
namespace) in a process group of their own: `stop` SIGKILLs the group and
reaps the parent. Its exit while the VM runs is the VM's death
(qemu/backend.py kills QEMU); QEMU's exit ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kata_shim.errors import InvalidArgument
from kata_shim.sandbox.diagnostics import block, exit_text, tail
from kata_shim.sandbox.owners import Owners
from kata_shim.sandbox.qemu.confine import confine_prefix
from kata_shim.sandbox.qemu.ownerguard import ATTACH_TIMEOUT, OwnerGuard, spawn_guarded
from kata_shim.sandbox.rootsock import listen_private

__all__ = [
    "DROPPED_CAPS",
    "VIRTIOFSD",
    "VIRTIOFSD_CAPS",
    "VirtiofsConfig",
    "VirtiofsDaemon",
    "daemon_args",
]

log = logging.getLogger(__name__)

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
SOCKET_NAME = "virtiofsd.sock"
LOG_NAME = "virtiofsd.log"
#: virtiofsd's bounding set (setpriv): file serving for every owner + its sandbox set-up
VIRTIOFSD_CAPS = (
    "chown",
    "dac_override",
    "fowner",
    "setuid",
    "setgid",
    "setpcap",  # without it libcap-ng takes a path virtiofsd's own seccomp filter kills
    "sys_admin",
    "sys_resource",
)
#: removed from the capabilities virtiofsd keeps for itself (it would fail asking for them)
DROPPED_CAPS = "-fsetid:-mknod:-setfcap"
#: Kata's virtio_fs_cache values → virtiofsd's `-o cache=`
CACHE_MODES = {"never": "none", "none": "none", "auto": "auto", "always": "always"}
#: how long `stop` waits for the daemon's namespaced child to be gone too
GROUP_EXIT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class VirtiofsConfig:
    """Kata's `virtio_fs_daemon`, `virtio_fs_cache` and `virtio_fs_extra_args` keys."""

    daemon: str = VIRTIOFSD
    cache: str = "auto"
    extra_args: tuple[str, ...] = ()

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> VirtiofsConfig:
        cache = str(table.get("virtio_fs_cache") or "auto")
        if cache not in CACHE_MODES:
            raise InvalidArgument(f"virtio_fs_cache {cache!r}: use never, auto or always")
        extra = table.get("virtio_fs_extra_args") or ()
        if not isinstance(extra, Sequence) or isinstance(extra, str):
            raise InvalidArgument("virtio_fs_extra_args must be a list of strings")
        return cls(str(table.get("virtio_fs_daemon") or VIRTIOFSD), cache, tuple(map(str, extra)))


def daemon_args(config: VirtiofsConfig, share: Path, fd: int) -> list[str]:
    """virtiofsd's argv (under the jail and setpriv), serving `share` on listening fd `fd`."""
    return [
        *confine_prefix(VIRTIOFSD_CAPS, ("--trap-setid",)),
        config.daemon,
        f"--fd={fd}",
        "-o",
        f"source={share}",
        "-o",
        "sandbox=namespace",
        "-o",
        f"cache={CACHE_MODES[config.cache]}",
        "-o",
        "no_xattr",
        "-o",
        f"modcaps={DROPPED_CAPS}",
        *config.extra_args,
    ]


async def _group_gone(pgid: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    log.warning("virtiofsd process group %d still has processes after %gs", pgid, timeout)


class VirtiofsDaemon:
    """The virtiofsd of one sandbox and its owner guard."""

    def __init__(self, name: str, config: VirtiofsConfig, share: Path, state_dir: Path) -> None:
        self.name = name
        self.config = config
        self.share = share
        self.socket_path = state_dir / SOCKET_NAME
        self.log_path = state_dir / LOG_NAME
        self.guard: OwnerGuard | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    async def start(self, owners: Owners) -> None:
        """Start virtiofsd and, under the jail, attach its owner guard; the socket is ready
        for QEMU on return."""
        with listen_private(self.socket_path) as listener:  # vhost-user: virtiofsd accepts
            argv = daemon_args(self.config, self.share, listener.fileno())
            log.info("sandbox %s: starting %s", self.name, " ".join(argv))
            self._proc, self.guard = await spawn_guarded(  # the guard: only under the jail
                f"{self.name}-virtiofsd", argv, (listener.fileno(),), owners, self.log_path
            )
        if self.guard is not None:
            await self.guard.attach(ATTACH_TIMEOUT)

    def allow(self, owners: Owners) -> None:
        if self.guard is not None:
            self.guard.allow(owners)

    async def wait(self) -> int:
        return await self._proc.wait() if self._proc is not None else 0

    async def watch(self, vm: asyncio.subprocess.Process, vm_dead: Callable[[str], None]) -> None:
        """Until the VM or the daemon exits. The daemon first: `vm_dead(why)` (the backend
        kills the VM). Either way the daemon is then ended and reaped (`stop`)."""
        vm_exit = asyncio.ensure_future(vm.wait())
        daemon_exit = asyncio.ensure_future(self.wait())
        try:
            await asyncio.wait((vm_exit, daemon_exit), return_when=asyncio.FIRST_COMPLETED)
            if daemon_exit.done() and vm.returncode is None:
                vm_dead(
                    f"that its virtiofsd (pid {self.pid}) {exit_text(daemon_exit.result())}"
                    f"{block('its stderr', tail(self.log_path, 6))}"
                )
        finally:
            for waiter in (vm_exit, daemon_exit):
                waiter.cancel()
            await self.stop()

    def kill(self) -> None:
        """SIGKILL the daemon's process group (its parent and its namespaced child)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Kill, reap and close the guard (idempotent); returns once the whole group is gone
        (the child, orphaned by its parent's death, is reaped by init a moment later)."""
        self.kill()
        if self._proc is not None:
            await self._proc.wait()
            await _group_gone(self._proc.pid, GROUP_EXIT_TIMEOUT)
        if self.guard is not None:
            self.guard.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
