"""Mount bookkeeping that is safe around bind mounts.

os.path.ismount() cannot see a bind mount of a directory from the same
filesystem, and shutil.rmtree() happily walks into one — deleting the *source*
(a container's rootfs). So mount points are read from /proc/self/mountinfo,
and `remove_tree` refuses to delete anything that still has a mount below it.
`unmount_all_under` unmounts by mount ID: each mount below the (trusted) base
is reached by an O_NOFOLLOW walk from the base (kata_shim.fdpath) and detached
through that fd only when the fd really is that mount's root, so a symlink or
a renamed directory planted below the base (a VM's share) never redirects it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from pathlib import Path

from kata_shim import fdpath

__all__ = [
    "MountedError",
    "is_mount_point",
    "mount_entries",
    "mount_points_under",
    "mounted_below",
    "remove_tree",
    "run_command",
    "unmount_all_under",
]

log = logging.getLogger(__name__)

_OCTAL = re.compile(r"\\([0-7]{3})")


class MountedError(OSError):
    """A directory still has file systems mounted below it."""


async def run_command(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run mount(8)/umount(8)-like argv, bounded: (exit code or -1 on timeout, stderr)."""
    import asyncio  # here: the `delete` action imports this module and never needs asyncio

    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return -1, f"timed out after {timeout:g}s"
    return proc.returncode or 0, err.decode(errors="replace").strip()


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_entries(mountinfo: str | None = None) -> list[tuple[int, Path]]:
    """(mount ID, mount point) of every mount, in mountinfo order."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return [(int(row[0]), Path(_unescape(row[4]))) for row in rows]


def mount_points(mountinfo: str | None = None) -> list[Path]:
    return [point for _, point in mount_entries(mountinfo)]


def mounted_below(path: Path, first: str) -> list[Path]:
    """Mount points below `path/first`, `first` taken as a name, never resolved."""
    return [point for _, point in _entries_under(Path(path).resolve(), first)]


def mount_points_under(path: Path, mountinfo: str | None = None) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them in)."""
    base = Path(path).resolve()
    found = [m for m in mount_points(mountinfo) if m == base or base in m.parents]
    return sorted(set(found), key=lambda m: len(m.parts), reverse=True)


def is_mount_point(path: Path) -> bool:
    return Path(path).resolve() in mount_points()


def _entries_under(base: Path, first: str | None = None) -> list[tuple[int, Path]]:
    found = [(i, m) for i, m in mount_entries() if m == base or base in m.parents]
    if first is not None:  # only below base/first (not resolved: it may be a guest's link)
        found = [(i, m) for i, m in found if m.relative_to(base).parts[:1] == (first,)]
    return sorted(found, key=lambda entry: len(entry[1].parts), reverse=True)


def _detach_below(base_fd: int, base: Path, entry: tuple[int, Path], ids: set[int]) -> bool:
    """Detach the mount `entry` names, reached without following links; False if not reached."""
    parts = entry[1].relative_to(base).parts
    try:
        with fdpath.opened(fdpath.walk(base_fd, parts)) as fd:
            if fdpath.mount_id(fd) not in ids:
                log.warning("not unmounting %s: the path no longer leads to a mount", entry[1])
                return False
            fdpath.detach(fd)
    except OSError as exc:
        log.warning("not unmounting %s: %s", entry[1], exc)
        return False
    return True


def unmount_all_under(path: Path, first: str | None = None) -> None:
    """Lazily unmount every mount at or below `path` (or below `path/first`), deepest first.

    `path` is the host's own (it is resolved); `first`, a name below it, is not.
    """
    base = Path(path).resolve()
    while entries := _entries_under(base, first):
        ids = {mount for mount, _ in entries}
        try:  # opened afresh each round: `base` itself may have been one of the mounts
            base_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        with fdpath.opened(base_fd):
            done = [_detach_below(base_fd, base, entry, ids) for entry in entries]
        if not any(done):
            return


def remove_tree(path: Path) -> None:
    """rmtree that never crosses into a mounted file system (raises MountedError instead)."""
    path = Path(path)
    if not path.exists():
        return
    mounted = mount_points_under(path)
    if mounted:
        raise MountedError(
            f"refusing to remove {path}: still mounted: {', '.join(map(str, mounted))}"
        )
    shutil.rmtree(path)
