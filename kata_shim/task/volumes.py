"""Volumes: the OCI spec's host bind mounts, made visible inside a VM sandbox.

A bind mount's source is a host path the guest cannot see. For an isolated
sandbox each one is shared (`Sandbox.share`, name `mount-<index>`) and the
agent's spec gets the guest path instead. Rules (Kata's behaviour):
* system destinations (/proc, /sys, /dev and below) are never shared; a bind
  onto /dev/shm becomes a private tmpfs in the guest (the host's shm cannot
  cross the VM boundary);
* a missing source is refused before anything is created in the guest;
* a bind with the `ro` option is shared read-only on the host side too (the
  guest's own read-only mount alone would not stop guest root);
* the local sandbox shares nothing (same kernel, same paths);
* a read-only rootfs is shared read-only on the host side, so runc in the
  guest cannot create missing mount points in it: `make_mount_points` creates
  them on the host first (as runc does on a runc host before it makes the
  rootfs read-only), one O_NOFOLLOW component at a time; a destination that
  runs through a symlink is left to runc, which resolves it inside the rootfs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kata_shim import fdpath
from kata_shim.errors import InvalidArgument
from kata_shim.sandbox.base import Sandbox

__all__ = ["SHM_TMPFS", "VolumePlan", "host_binds", "make_mount_points", "share_volumes"]

log = logging.getLogger(__name__)

SYSTEM_DESTINATIONS = ("/proc", "/sys", "/dev")
SHM_TMPFS = {
    "destination": "/dev/shm",
    "type": "tmpfs",
    "source": "shm",
    "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
}

#: spec mount index → replacement mount object for the guest spec
VolumePlan = dict[int, dict[str, Any]]


def _is_bind(mount: Mapping[str, Any]) -> bool:
    options = mount.get("options") or []
    return mount.get("type") in ("bind", "rbind") or "bind" in options or "rbind" in options


def _is_system(destination: str) -> bool:
    clean = "/" + destination.strip("/")
    return any(clean == d or clean.startswith(d + "/") for d in SYSTEM_DESTINATIONS)


def host_binds(spec: Mapping[str, Any]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(index, mount) of each bind mount in the spec, in order."""
    for index, mount in enumerate(spec.get("mounts") or []):
        if isinstance(mount, Mapping) and _is_bind(mount):
            yield index, mount


async def share_volumes(sandbox: Sandbox, container_id: str, spec: Mapping[str, Any]) -> VolumePlan:
    """Share each host bind source with the sandbox; return the guest spec's replacements."""
    if not sandbox.isolated:
        return {}
    plan: VolumePlan = {}
    for index, mount in host_binds(spec):
        destination = str(mount.get("destination") or "")
        if _is_system(destination):
            if "/" + destination.strip("/") == "/dev/shm":
                plan[index] = dict(SHM_TMPFS)
            continue
        source = str(mount.get("source") or "")
        if not source.startswith("/"):
            raise InvalidArgument(
                f"bind mount onto {destination}: source {source!r} is not absolute"
            )
        readonly = "ro" in (mount.get("options") or [])
        guest = await sandbox.share(container_id, f"mount-{index}", Path(source), readonly=readonly)
        plan[index] = {**mount, "source": guest}
    return plan


def _make_point(root_fd: int, parts: list[str], is_file: bool) -> None:
    fd = os.dup(root_fd)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if last and is_file:
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                os.close(os.open(part, flags, 0o644, dir_fd=fd))
                return
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            child = fdpath.walk(fd, [part], directory=True)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def make_mount_points(rootfs: Path, spec: Mapping[str, Any]) -> None:
    """Create the spec's mount destinations that `rootfs` lacks (for a read-only share)."""
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    with fdpath.opened(root_fd):
        for mount in spec.get("mounts") or []:
            if not isinstance(mount, Mapping):
                continue
            parts = [p for p in str(mount.get("destination") or "").split("/") if p]
            if not parts or not all(fdpath.check_component(p) for p in parts):
                continue
            if len(parts) > 1 and _is_system("/".join(parts)):
                continue  # inside the guest's own /proc, /sys, /dev mounts
            source = str(mount.get("source") or "")
            is_file = _is_bind(mount) and os.path.isfile(source)
            try:
                _make_point(root_fd, parts, is_file)
            except OSError as exc:  # a symlink (ELOOP/ENOTDIR) or an unwritable rootfs
                log.info("mount point %s not created in %s: %s", "/".join(parts), rootfs, exc)
