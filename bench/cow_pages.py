"""Why a forked daemon's PSS is what it is: its private pages, classified against the fork server.

Starts a private containerd with our shim (local sandbox), one pod that brings the fork
server up (its daemon is exec'd cold), then `--pods` pods (`sleep`). For each forked
pod's shim daemon and local agent it reads /proc/<pid>/pagemap and /proc/kpagecount:
a present page mapped by one process only is private. Each private page of a writable
mapping is compared, 8 bytes at a time, with the same address in the fork server, where
it was one shared page before the fork:

  identical       no byte differs: written and restored (a reference count raised and
                  dropped again: CPython 3.11 writes objects it only reads)
  refcount_only   every differing word is an object's reference count (the word after it
                  points to a type object with a readable tp_name)
  str_refcount    ... of which every such object is a str (attribute and global names)
  other           anything else: objects made or changed, allocator metadata, buffers
  new             the address is not mapped in the server (memory the child allocated)

and `written_kb` adds up the bytes that differ on the pages the server also has: what the
child really changed, against the whole pages it pays for.

JSON on stdout: per process kind (daemon, agent), the median over the pods of each class
in kB, of the private kB by mapping, and the types whose reference counts were written on
the most pages. Needs root (/proc/kpagecount, other processes' /proc/<pid>/mem). Assumes
CPython's 64-bit object layout (ob_refcnt, ob_type; a type's tp_name at offset 24).
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from shim_vs_runc import (
    KATA,
    agent_pids,
    fork_server_pid,
    forked_from_server,
    pod_command,
    remove_task,
    shim_pid,
)

from kata_shim.devenv.shim import KataRig

PAGE = 4096
WORD = struct.Struct("<q")
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63
TP_NAME = 24  # offset of tp_name in a PyTypeObject (64-bit)
MAX_REFCOUNT = 1 << 32
CLASSES = ("identical", "refcount_only", "str_refcount", "other", "new")


class Memory:
    """Reads another process's memory; names the type objects it points to."""

    def __init__(self, pid: int) -> None:
        self.file = open(f"/proc/{pid}/mem", "rb", buffering=0)  # noqa: SIM115 (closed in close)
        self.names: dict[int, str | None] = {}

    def read(self, addr: int, size: int) -> bytes | None:
        try:
            self.file.seek(addr)
            return self.file.read(size)
        except (OSError, ValueError, OverflowError):
            return None

    def type_name(self, addr: int) -> str | None:
        """tp_name of the type object at `addr`, or None if it does not look like one."""
        if addr not in self.names:
            self.names[addr] = self._type_name(addr)
        return self.names[addr]

    def _type_name(self, addr: int) -> str | None:
        if not 0x1000 < addr < 1 << 47:
            return None
        raw = self.read(addr + TP_NAME, 8)
        pointer = WORD.unpack(raw)[0] if raw and len(raw) == 8 else 0
        text = self.read(pointer, 80) if 0x1000 < pointer < 1 << 47 else None
        if not text or b"\0" not in text:
            return None
        name = text.split(b"\0", 1)[0]
        return name.decode() if name and all(32 < c < 127 for c in name) else None

    def close(self) -> None:
        self.file.close()


def writable_maps(pid: int) -> list[tuple[int, int, str]]:
    """(start, end, label) of the writable private mappings: anonymous, heap, binaries' data."""
    found = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        name = fields[5] if len(fields) > 5 else ""
        if "w" not in fields[1] or "p" not in fields[1] or name.startswith("[s"):
            continue  # read-only, shared, or [stack]
        start, end = (int(x, 16) for x in fields[0].split("-"))
        found.append((start, end, Path(name).name if name.startswith("/") else name or "anon"))
    return found


def private_pages(pid: int) -> list[tuple[int, str]]:
    """(address, mapping label) of the present pages that only `pid` maps."""
    pages = []
    with (
        open(f"/proc/{pid}/pagemap", "rb") as pagemap,
        open("/proc/kpagecount", "rb") as counts,
    ):
        for start, end, label in writable_maps(pid):
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read((end - start) // PAGE * 8)
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", entries)):
                if not entry & PRESENT:
                    continue
                counts.seek((entry & PFN_MASK) * 8)
                if struct.unpack("<Q", counts.read(8))[0] == 1:
                    pages.append((start + i * PAGE, label))
    return pages


def refcount_type(server: Memory, before: bytes, after: bytes, offset: int) -> str | None:
    """The type of the object whose reference count is the changed word at `offset`, or None."""
    old, new = WORD.unpack_from(before, offset)[0], WORD.unpack_from(after, offset)[0]
    if not (0 < old < MAX_REFCOUNT and 0 < new < MAX_REFCOUNT) or offset + 16 > PAGE:
        return None
    return server.type_name(WORD.unpack_from(before, offset + 8)[0])


def classify(server: Memory, before: bytes | None, after: bytes) -> tuple[str, list[str], int]:
    """One private page's class, the types whose reference counts changed on it, and how
    many of its words differ from the server's page."""
    if before is None:
        return "new", [], 0
    changed = [o for o in range(0, PAGE, 8) if before[o : o + 8] != after[o : o + 8]]
    if not changed:
        return "identical", [], 0
    types = [refcount_type(server, before, after, o) for o in changed]
    named = [t for t in types if t]
    if len(named) < len(changed):
        return "other", named, len(changed)
    return ("str_refcount" if set(named) == {"str"} else "refcount_only"), named, len(changed)


def survey(pid: int, server_pid: int) -> dict[str, Any]:
    """Private kB of `pid` by class and by mapping; reference-count writes by type (pages)."""
    child, server = Memory(pid), Memory(server_pid)
    classes: Counter[str] = Counter()
    mappings: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    written = 0
    try:
        for addr, label in private_pages(pid):
            after = child.read(addr, PAGE)
            if after is None or len(after) != PAGE:
                continue
            before = server.read(addr, PAGE)
            if before is not None and len(before) != PAGE:
                before = None
            kind, types, words = classify(server, before, after)
            classes[kind] += 1
            written += words * 8
            mappings[label] += 1
            by_type.update(set(types))
    finally:
        child.close()
        server.close()
    kb = PAGE // 1024
    return {
        "private_kb": sum(classes.values()) * kb,
        "classes_kb": {name: classes[name] * kb for name in CLASSES},
        "mappings_kb": {name: n * kb for name, n in mappings.most_common(6)},
        "written_kb": round(written / 1024),
        "refcount_pages_by_type": dict(by_type.most_common(12)),
    }


def median_survey(surveys: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the pods (the type table of the first pod, as a sample)."""

    def med(values: list[int]) -> int:
        return round(statistics.median(values))

    return {
        "pods": len(surveys),
        "private_kb": med([s["private_kb"] for s in surveys]),
        "classes_kb": {c: med([s["classes_kb"][c] for s in surveys]) for c in CLASSES},
        "written_kb": med([s["written_kb"] for s in surveys]),
        "mappings_kb": surveys[0]["mappings_kb"],
        "refcount_pages_by_type": surveys[0]["refcount_pages_by_type"],
    }


def measure(pods: int, settle: float) -> dict[str, Any]:
    """The first pod brings the fork server up (cold exec); the next `pods` are measured."""
    with KataRig(prefix="cow") as rig:
        names = [rig.id(f"cow{i}") for i in range(pods + 1)]
        for name in names:
            argv = ["ctr", "--address", rig.containerd.address]
            subprocess.run([*argv, *rig.run_args(name, pod_command(name), "-d")], check=True)
        time.sleep(settle)
        server = fork_server_pid(rig)
        shims = [shim_pid(rig, name) for name in names[1:]]
        daemons = [pid for pid in shims if forked_from_server(pid, rig)]
        if server is None or not daemons:
            raise SystemExit("no forked daemon to measure (fork server off or not running)")
        agents = [pid for daemon in daemons for pid in agent_pids(daemon)]
        report = {
            "runtime": KATA,
            "daemon": median_survey([survey(pid, server) for pid in daemons]),
            "agent": median_survey([survey(pid, server) for pid in agents]),
        }
        for name in names:
            remove_task(rig, name)
            rig.ids.remove(name)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pods", type=int, default=3)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after the last start")
    args = parser.parse_args(argv)
    json.dump(measure(args.pods, args.settle), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
