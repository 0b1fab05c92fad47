"""The pod's host cgroup (Kata's `sandbox_cgroup_only`): where the VM and the shim run.

With `[runtime] sandbox_cgroup_only = true`, the sandbox container's OCI
`linux.cgroupsPath` names a cgroup on the host that holds everything the pod
costs there: the shim daemon moves itself in before the sandbox starts (so the
hypervisor, virtiofsd and a local agent start in it), the sandbox's pid is moved
in after start (a pre-forked or libvirt-started process), and the cgroup is
removed at teardown once those processes are gone (the shim first moves back to
where it came from). Like Kata, we set no CPU/memory limits of our own: the
caller sizes the pod cgroup (Kubernetes: kubelet, pod overhead included) and its
limits bound the whole VM.

Paths (`host_paths`), facts from Kata and containerd 1.6's CRI:
  * cgroupfs `/a/b/<id>`: the pod cgroup is `/a/b` (CRI's `cgroup_parent`, the
    path containerd's PodSandboxStats loads), the sandbox's is `/a/b/kata_<id>`
    (Kata renames the base to `kata_<base>`);
  * systemd `slice:prefix:name` (CRI passes `<base of cgroup_parent>:cri-containerd:<id>`
    when the parent ends in `.slice`): the pod cgroup is the slice's expanded
    path (`a-b.slice` → `/a.slice/a-b.slice`), the sandbox's is
    `<expanded>/<prefix>-<name>.scope` as runc's systemd driver names it. Without
    systemd we create these as plain cgroupfs directories (no D-Bus).
The local sandbox's containers run on the host: `container_path` places each in
the pod cgroup, as runc's containers are (cgroupfs `/a/b/<cid>` as it is;
systemd `slice:prefix:<cid>` → `<expanded slice>/<cid>`, apart from the
sandbox's scope), so PodSandboxStats and the pod's limits cover them.
Directories we create are recorded (`RECORD` in the sandbox state dir) so the
`delete` action can remove them after a crashed shim; a pod cgroup that existed
before (kubelet's) is never removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kata_shim.cgroupfs import cgroup_mounts
from kata_shim.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "RECORD",
    "HostPaths",
    "PodCgroup",
    "container_path",
    "expand_slice",
    "host_paths",
    "remove_recorded",
    "spec_cgroups_path",
]

log = logging.getLogger(__name__)

#: in the sandbox state dir: the cgroup directories this sandbox created (for `delete`)
RECORD = "host-cgroup.json"
KATA_PREFIX = "kata_"
_MOUNTINFO = Path("/proc/self/mountinfo")
_RMDIR_TRIES = 20  # a v1 cgroup stays busy briefly after its last task exited
_RMDIR_PAUSE = 0.1


@dataclass(frozen=True, slots=True)
class HostPaths:
    """Paths inside every hierarchy: the pod's cgroup and the sandbox's below it."""

    pod: str
    sandbox: str


def spec_cgroups_path(spec: Mapping[str, Any]) -> str:
    """The OCI spec's `linux.cgroupsPath` ("" when absent)."""
    linux = spec.get("linux")
    value = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    return value if isinstance(value, str) else ""


def expand_slice(slice_name: str) -> str:
    """systemd's slice → cgroupfs path: `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`."""
    if slice_name in ("", "-.slice"):
        return "/"
    stem = slice_name.removesuffix(".slice")
    bad = (
        stem == slice_name
        or "/" in stem
        or not stem
        or stem.startswith("-")
        or stem.endswith("-")
        or "--" in stem
    )
    if bad:
        raise InvalidArgument(
            f"cgroupsPath: {slice_name!r} is not a systemd slice name "
            "(want e.g. kubepods-besteffort.slice)"
        )
    parts = stem.split("-")
    return "/" + "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def _clean(path: str, what: str) -> str:
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise InvalidArgument(f"cgroupsPath: {what} {path!r} must not contain '.' or '..'")
    return "/" + "/".join(parts)


def host_paths(cgroups_path: str, sandbox_id: str) -> HostPaths:
    """The pod and sandbox cgroups for the sandbox container's `cgroupsPath`."""
    if not cgroups_path:
        raise InvalidArgument(f"sandbox {sandbox_id}: no linux.cgroupsPath in the spec")
    if ":" in cgroups_path:
        fields = cgroups_path.split(":")
        if len(fields) != 3 or not fields[2]:
            raise InvalidArgument(
                f"cgroupsPath {cgroups_path!r}: systemd form is slice:prefix:name"
            )
        slice_name, prefix, name = fields
        pod = expand_slice(slice_name)
        unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
        if "/" in unit:
            raise InvalidArgument(f"cgroupsPath {cgroups_path!r}: unit name contains '/'")
        return HostPaths(pod, posixpath.join(pod, unit))
    full = _clean(cgroups_path, "path")
    pod, base = posixpath.split(full)
    if not base:
        raise InvalidArgument(f"cgroupsPath {cgroups_path!r}: names the root cgroup")
    return HostPaths(pod, posixpath.join(pod, KATA_PREFIX + base))


def container_path(cgroups_path: str) -> str:
    """A local-sandbox container's host cgroup (cgroupfs) for its spec's `cgroupsPath`:
    a cgroupfs path as it is, `slice:prefix:name` → `<expanded slice>/<name>`; "" for
    none or a relative path (runc would resolve it against the agent's own cgroup)."""
    if ":" in cgroups_path:
        fields = cgroups_path.split(":")
        if len(fields) != 3 or not fields[2] or "/" in fields[2]:
            raise InvalidArgument(
                f"cgroupsPath {cgroups_path!r}: systemd form is slice:prefix:name"
            )
        return posixpath.join(expand_slice(fields[0]), fields[2])
    if not cgroups_path.startswith("/"):
        return ""
    full = _clean(cgroups_path, "path")
    if full == "/":
        raise InvalidArgument(f"cgroupsPath {cgroups_path!r}: names the root cgroup")
    return full


def _hierarchies(mountinfo: str | None = None) -> list[Path]:
    """The mount point of every cgroup hierarchy (v1 controllers, named, v2)."""
    mounts = cgroup_mounts(mountinfo if mountinfo is not None else _MOUNTINFO.read_text())
    return sorted(set(mounts.values()))


def _own_cgroups(pid: int, mountinfo: str | None = None) -> dict[Path, str]:
    """mount point → the cgroup `pid` is in, in that hierarchy."""
    mounts = cgroup_mounts(mountinfo if mountinfo is not None else _MOUNTINFO.read_text())
    found: dict[Path, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            mount = mounts.get(name.removeprefix("name="))
            if mount is not None:
                found.setdefault(mount, path)
    return found


def _init_cpuset(directory: Path) -> None:
    """A new v1 cpuset cgroup starts empty: copy cpus and mems from its parent."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        own, inherited = directory / name, (directory.parent / name).read_text()
        if own.exists() and not own.read_text().strip() and inherited.strip():
            own.write_text(inherited)


def _enable_v2_controllers(parent: Path) -> None:
    """Let a v2 child account cpu/memory/io/pids (best effort: a hybrid host has none)."""
    available = (parent / "cgroup.controllers").read_text().split()
    wanted = [c for c in ("cpu", "io", "memory", "pids", "cpuset") if c in available]
    for controller in wanted:
        with contextlib.suppress(OSError):
            (parent / "cgroup.subtree_control").write_text(f"+{controller}")


@dataclass
class PodCgroup:
    """The sandbox's host cgroup in every hierarchy; create → join* → remove."""

    paths: HostPaths
    roots: list[Path] = field(default_factory=_hierarchies)
    #: directories made by `create`, deepest last (event loop only)
    created: list[Path] = field(default_factory=list)
    #: where the shim was before `join` (mount point → cgroup), for `leave`
    origin: dict[Path, str] = field(default_factory=dict)

    def dirs(self, path: str) -> list[Path]:
        return [root / path.lstrip("/") for root in self.roots]

    def create(self) -> None:
        """mkdir the pod and sandbox cgroups (and missing ancestors) in every hierarchy."""
        parts = [p for p in self.paths.sandbox.split("/") if p]
        try:
            for root in self.roots:
                self._make(root, parts)
        except OSError as exc:
            self.remove_now()
            raise FailedPrecondition(
                f"cannot create the sandbox cgroup {self.paths.sandbox}: {exc} "
                "(sandbox_cgroup_only needs root and writable cgroup hierarchies)"
            ) from exc

    def _make(self, root: Path, parts: list[str]) -> None:
        directory = root
        for part in parts:
            directory = directory / part
            if directory.is_dir():
                continue
            if (directory.parent / "cgroup.controllers").exists():
                _enable_v2_controllers(directory.parent)
            directory.mkdir()
            self.created.append(directory)
            v1_cpuset = not (directory / "cgroup.controllers").exists()  # v2: empty = inherit
            if v1_cpuset and (directory / "cpuset.cpus").exists():
                _init_cpuset(directory)

    def join(self, pid: int) -> None:
        """Move `pid` (all its threads) into the sandbox cgroup of every hierarchy."""
        for directory in self.dirs(self.paths.sandbox):
            try:
                (directory / "cgroup.procs").write_text(str(pid))
            except OSError as exc:
                raise FailedPrecondition(
                    f"cannot move pid {pid} into cgroup {directory}: {exc}"
                ) from exc

    def enter(self) -> None:
        """Move this process (the shim) in, remembering where it was."""
        self.origin = _own_cgroups(os.getpid())
        self.join(os.getpid())

    def leave(self) -> None:
        """Move this process back to where `enter` found it (best effort)."""
        for root, path in self.origin.items():
            with contextlib.suppress(OSError):
                (root / path.lstrip("/") / "cgroup.procs").write_text(str(os.getpid()))
        self.origin = {}

    def record(self, state_dir: Path) -> None:
        """Write what we created into `state_dir` (for `delete` after a crash)."""
        data = {"sandbox": self.paths.sandbox, "created": [str(d) for d in self.created]}
        with contextlib.suppress(OSError):
            (state_dir / RECORD).write_text(json.dumps(data))

    async def remove(self) -> list[Path]:
        """rmdir what we created, deepest first, retrying while a cgroup is still busy."""
        for _ in range(_RMDIR_TRIES):
            if not self.remove_now():
                return []
            await asyncio.sleep(_RMDIR_PAUSE)
        left = self.created[:]
        log.warning("cgroups still busy, left on the host: %s", ", ".join(map(str, left)))
        return left

    def remove_now(self) -> list[Path]:
        """One pass of `remove`; returns the directories still there."""
        self.created = _rmdirs(self.created)
        return self.created


def _rmdirs(directories: Iterable[Path]) -> list[Path]:
    left = []
    for directory in sorted(directories, key=lambda d: -len(d.parts)):
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                log.warning("cannot remove cgroup %s: %s", directory, exc)
            left.append(directory)
    return left


def remove_recorded(state_dir: Path) -> list[Path]:
    """For `delete`: rmdir the directories `RECORD` names; returns those left."""
    try:
        data = json.loads((state_dir / RECORD).read_text())
    except (OSError, ValueError):
        return []
    created = [Path(p) for p in data.get("created", []) if str(p).startswith("/sys/fs/cgroup/")]
    return _rmdirs(created)
