"""Mount Create's rootfs mounts into `<bundle>/rootfs`, and undo it, with mount(8).

containerd sends the snapshot as one (or a few stacked) `bind` or `overlay`
mounts; iSulad and pre-mounted CRI send none (nothing happens here then).
Rules: a failed mount undoes the ones before it; unmounting never raises
(logged), falls back to a lazy unmount, and every command is time-bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from kata_shim.errors import FailedPrecondition, InvalidArgument
from kata_shim.mounts import run_command
from kata_shim.proto import mount_pb2

__all__ = ["MOUNT_TIMEOUT", "mount_argv", "mount_rootfs", "unmount_rootfs"]

log = logging.getLogger(__name__)

MOUNT_TIMEOUT = 30.0


def mount_argv(mount: mount_pb2.Mount, target: Path) -> list[str]:
    """The mount(8) command line for one containerd Mount onto `target`."""
    options = [o for o in mount.options if o]
    if mount.type in ("bind", "rbind") or "bind" in options or "rbind" in options:
        if not any(o in ("bind", "rbind") for o in options):
            options.insert(0, "rbind" if mount.type == "rbind" else "bind")
        return ["mount", "-o", ",".join(options), mount.source, str(target)]
    if not mount.type:
        raise InvalidArgument(f"rootfs mount of {mount.source!r} has no type")
    argv = ["mount", "-t", mount.type]
    if options:
        argv += ["-o", ",".join(options)]
    return [*argv, mount.source or mount.type, str(target)]


async def _run(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    return await run_command(list(argv), timeout)


async def mount_rootfs(
    mounts: Sequence[mount_pb2.Mount], target: Path, timeout: float = MOUNT_TIMEOUT
) -> int:
    """Mount `mounts` in order onto `target` (created if missing); return how many."""
    target.mkdir(parents=True, exist_ok=True)
    done = 0
    for mount in mounts:
        code, err = await _run(mount_argv(mount, target), timeout)
        if code != 0:
            await unmount_rootfs(target, done, timeout)
            raise FailedPrecondition(f"mount {mount.type} {mount.source} on {target}: {err}")
        done += 1
    return done


async def unmount_rootfs(target: Path, count: int, timeout: float = MOUNT_TIMEOUT) -> None:
    """Unmount what `mount_rootfs` stacked on `target` (`count` layers); never raises."""
    for _ in range(count):
        code, err = await _run(["umount", str(target)], timeout)
        if code != 0:
            log.warning("umount %s: %s; trying a lazy unmount", target, err)
            code, err = await _run(["umount", "-l", str(target)], timeout)
            if code != 0:
                log.error("lazy umount %s failed: %s", target, err)
                return
