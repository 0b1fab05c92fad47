"""Before/after inventory of what a reliability test could leak, diff-listed.

`Inventory.take(rig)` records, for one KataRig:
  processes  live processes whose argv carries the rig's marker (shims, agents,
             container processes) or that descend from this test process
             (containerd itself and our own `ctr events` excluded by pid)
  mounts     mount points in /proc/self/mountinfo under the rig's directory or
             naming its marker (bundle rootfs, agent mounts)
  sockets    /run/containerd/s entries that are a shim socket of one of the
             rig's ids, and unix sockets under the rig's directory
  state      sandbox state dirs (<state_dir>/*), containerd's v2 task bundles
             (state and root), /run/kata-shim entries naming the marker
`leaks(before, rig)` waits (bounded) until nothing is left that was not there
before, and returns the diff lines (empty = clean).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from kata_shim.devenv.shim import KataRig, processes_matching
from kata_shim.shim.paths import socket_address, socket_path

__all__ = ["Inventory", "leaks"]

TASK_DIRS = ("state/io.containerd.runtime.v2.task", "root/io.containerd.runtime.v2.task")


def _ppid(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    fields = text.rsplit(")", 1)[1].split()
    return -1 if fields[0] == "Z" else int(fields[1])


def _descendants(root: int) -> set[int]:
    parents = {int(n): _ppid(int(n)) for n in os.listdir("/proc") if n.isdigit()}
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _argv(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _processes(rig: KataRig, ignore: set[int]) -> set[str]:
    pids = {pid for pid, _ in processes_matching(rig.marker)} | _descendants(os.getpid())
    pids -= ignore | {os.getpid()}
    if rig.containerd.pid:
        pids.discard(rig.containerd.pid)
    return {f"pid {pid}: {argv}" for pid in pids if (argv := _argv(pid)) and _ppid(pid) != -1}


def _mounts(rig: KataRig) -> set[str]:
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(str(rig.work)) or rig.marker in point:
            points.add(point)
    return points


def _sockets(rig: KataRig) -> set[str]:
    found = set()
    for task_id in rig.ids:
        path = socket_path(socket_address(rig.containerd.address, "default", task_id))
        if path and os.path.exists(path):
            found.add(path)
    for root, _dirs, files in os.walk(rig.work):
        for name in files:
            path = os.path.join(root, name)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode) and not name.startswith("containerd.sock"):
                    found.add(path)
            except OSError:
                continue
    return found


def _listing(path: Path) -> set[str]:
    try:
        return {str(path / name) for name in os.listdir(path)}
    except OSError:
        return set()


def _state(rig: KataRig) -> set[str]:
    entries = _listing(rig.state_dir)
    for sub in TASK_DIRS:
        for namespace in _listing(rig.containerd.work / sub):
            entries |= _listing(Path(namespace))
    entries |= {p for p in _listing(Path("/run/kata-shim")) if rig.marker in p}
    return entries


@dataclass
class Inventory:
    processes: set[str]
    mounts: set[str]
    sockets: set[str]
    state: set[str]

    @classmethod
    def take(cls, rig: KataRig, ignore: frozenset[int] = frozenset()) -> Inventory:
        return cls(_processes(rig, set(ignore)), _mounts(rig), _sockets(rig), _state(rig))

    def minus(self, before: Inventory) -> list[str]:
        lines = []
        for kind in ("processes", "mounts", "sockets", "state"):
            for item in sorted(getattr(self, kind) - getattr(before, kind)):
                lines.append(f"{kind}: {item}")
        return lines


def leaks(
    before: Inventory, rig: KataRig, *, ignore: frozenset[int] = frozenset(), timeout: float = 10.0
) -> list[str]:
    """What exists now and did not before (waits up to `timeout` for it to go away)."""
    deadline = time.monotonic() + timeout
    while True:
        diff = Inventory.take(rig, ignore).minus(before)
        if not diff or time.monotonic() > deadline:
            return diff
        time.sleep(0.2)
