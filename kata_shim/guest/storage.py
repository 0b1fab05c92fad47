"""Storages the host asks the agent to mount (CreateSandbox / CreateContainer).

Drivers: "local" (a directory, no mount), "ephemeral" (tmpfs, mounted with
mount(2): its options are the kernel's own flags and tmpfs data), anything else
is mounted with `mount -t <fstype> -o <options> <source> <mount_point>`
("bind"/"none" fstype → a bind mount). Mounts are reference-counted by mount
point across owners (the sandbox is owner "", a container its id) and
unmounted (detached) when the last owner lets go, newest first.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from kata_shim.errors import FailedPrecondition, InvalidArgument
from kata_shim.guest import spawn
from kata_shim.guest.reaper import Reaper

__all__ = ["StorageSpec", "Storages", "unmount"]

log = logging.getLogger(__name__)

MNT_DETACH = 2
#: mount(8) option words that are mount(2) flags (the rest is the file system's data)
MOUNT_FLAGS = {
    "ro": 1, "rw": 0, "nosuid": 2, "suid": 0, "nodev": 4, "dev": 0, "noexec": 8, "exec": 0,
    "sync": 16, "async": 0, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21,
    "strictatime": 1 << 24,
}  # fmt: skip


def mount_tmpfs(target: str, options: tuple[str, ...] | list[str]) -> None:
    """mount -t tmpfs -o `options` tmpfs `target`, as one mount(2) call (no mount(8) spawn)."""
    flags = 0
    data = []
    for option in options:
        if option in MOUNT_FLAGS:
            flags |= MOUNT_FLAGS[option]
        elif option:
            data.append(option)
    libc = ctypes.CDLL(None, use_errno=True)
    text = ",".join(data).encode() or None
    if libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", flags, text) != 0:
        err = ctypes.get_errno()
        given = ",".join(options)
        raise FailedPrecondition(f"mount tmpfs on {target} ({given}): {os.strerror(err)}")


@dataclass(frozen=True, slots=True)
class StorageSpec:
    driver: str
    source: str
    fstype: str
    mount_point: str
    options: tuple[str, ...] = ()


def unmount(path: Path) -> None:
    """umount2(path, MNT_DETACH); a path that is no mount point is fine."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point / gone
            raise OSError(err, f"umount {path}: {os.strerror(err)}")


@dataclass
class _Mount:
    path: Path
    mounted: bool  # False for "local" directories
    owners: set[str] = field(default_factory=set)


class Storages:
    """The agent's storage mounts, by mount point."""

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper
        self._mounts: dict[Path, _Mount] = {}  # insertion order = mount order

    def owned_by(self, owner: str) -> list[Path]:
        return [m.path for m in self._mounts.values() if owner in m.owners]

    async def add(self, owner: str, storage: StorageSpec) -> None:
        if not storage.mount_point or not os.path.isabs(storage.mount_point):
            raise InvalidArgument(f"storage mount point {storage.mount_point!r} is not absolute")
        path = Path(storage.mount_point)
        existing = self._mounts.get(path)
        if existing is not None:
            existing.owners.add(owner)
            return
        path.mkdir(parents=True, exist_ok=True)
        mounted = storage.driver != "local"
        if mounted:
            await self._mount(storage)
        self._mounts[path] = _Mount(path, mounted, {owner})
        log.info("storage %s (%s) at %s for %r", storage.source, storage.driver, path, owner)

    async def _mount(self, storage: StorageSpec) -> None:
        if storage.driver == "ephemeral":
            mount_tmpfs(storage.mount_point, storage.options)
            return
        fstype = storage.fstype
        options = list(storage.options)
        argv = ["mount"]
        if fstype in ("bind", "none", ""):
            options = options if {"bind", "rbind"} & set(options) else ["rbind", *options]
        else:
            argv += ["-t", fstype]
        if options:
            argv += ["-o", ",".join(options)]
        argv += [storage.source or fstype or "none", storage.mount_point]
        code, output = await spawn.run(self._reaper, argv, timeout=30, stderr=True)
        if code != 0:
            message = output.decode(errors="replace").strip() or f"exit {code}"
            raise FailedPrecondition(f"mount {storage.source} on {storage.mount_point}: {message}")

    def release(self, owner: str) -> None:
        """Drop `owner`'s references; unmount what nobody uses any more."""
        for mount in reversed(list(self._mounts.values())):
            mount.owners.discard(owner)
            if mount.owners:
                continue
            del self._mounts[mount.path]
            if mount.mounted:
                try:
                    unmount(mount.path)
                except OSError as exc:
                    log.error("%s", exc)
                    continue
            log.info("storage at %s released", mount.path)

    def release_all(self) -> None:
        for owner in {o for m in self._mounts.values() for o in m.owners}:
            self.release(owner)
