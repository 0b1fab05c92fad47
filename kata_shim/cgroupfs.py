"""The cgroup hierarchies of this kernel, and the tree kata-shim's containers live under.

Shared by the guest agent and the host's local sandbox (which cleans up after a
crashed local agent), so neither imports the other. `cgroup_mounts` reads
/proc/self/mountinfo ("" = the v2 unified hierarchy); `remove_tree` removes a
tree's empty directories in every hierarchy; containers of sandbox S live at
`/kata_shim/S/<container>` (`default_cgroups_path`) unless the spec says otherwise.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["CGROUP_ROOT", "cgroup_mounts", "default_cgroups_path", "remove_tree"]

#: the top directory, in every hierarchy, of the cgroups the agent creates
CGROUP_ROOT = "kata_shim"
_MOUNTINFO = Path("/proc/self/mountinfo")
# super options of a v1 cgroup mount that are not controllers
_GENERIC = {"rw", "ro", "xattr", "clone_children", "noprefix", "cpuset_v2_mode", "favordynmods"}


def default_cgroups_path(sandbox_id: str, container_id: str) -> str:
    """The cgroup of a container whose spec names none ("" = the sandbox's parent)."""
    return f"/{CGROUP_ROOT}/{sandbox_id}/{container_id}"


def cgroup_mounts(mountinfo: str) -> dict[str, Path]:
    """controller (or "" for the v2 unified hierarchy) → mount point."""
    mounts: dict[str, Path] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        if tail[0] == "cgroup2":
            mounts.setdefault("", Path(fields[4]))
        elif tail[0] == "cgroup" and len(tail) >= 3:
            for option in tail[2].split(","):
                if option.startswith("name=") or ("=" not in option and option not in _GENERIC):
                    mounts.setdefault(option.removeprefix("name="), Path(fields[4]))
    return mounts


def remove_tree(rel: str, mountinfo: str | None = None) -> list[Path]:
    """rmdir `rel` (and its empty subdirectories) in every hierarchy; returns what remains."""
    mounts = cgroup_mounts(mountinfo if mountinfo is not None else _MOUNTINFO.read_text())
    left = []
    for root in sorted(set(mounts.values())):
        top = root / rel.strip("/")
        if not top.is_dir() or top == root:
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if top.exists():
            left.append(top)
    return left
