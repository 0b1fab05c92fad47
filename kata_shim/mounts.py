"""Mount bookkeeping that is safe around bind mounts.

os.path.ismount() cannot see a bind mount of a directory from the same
filesystem, and shutil.rmtree() happily walks into one — deleting the *source*
(a container's rootfs). So mount points are read from /proc/self/mountinfo,
and `remove_tree` refuses to delete anything that still has a mount below it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "MountedError",
    "is_mount_point",
    "mount_points_under",
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


def mount_points(mountinfo: str | None = None) -> list[Path]:
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    return [Path(_unescape(line.split()[4])) for line in text.splitlines() if line.strip()]


def mount_points_under(path: Path, mountinfo: str | None = None) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them in)."""
    base = Path(path).resolve()
    found = [m for m in mount_points(mountinfo) if m == base or base in m.parents]
    return sorted(set(found), key=lambda m: len(m.parts), reverse=True)


def is_mount_point(path: Path) -> bool:
    return Path(path).resolve() in mount_points()


def unmount_all_under(path: Path) -> None:
    """Lazily unmount every mount at or below `path`, deepest first."""
    for point in mount_points_under(path):
        result = subprocess.run(["umount", "-l", str(point)], capture_output=True, text=True)
        if result.returncode != 0:
            log.warning("umount %s: %s", point, result.stderr.strip())


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
