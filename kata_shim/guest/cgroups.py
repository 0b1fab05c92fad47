"""Container cgroups as the agent sees them: paths, statistics, cleanup (v1, v2, hybrid).

Paths come from /proc/<pid>/cgroup of the container's init, resolved against
the cgroup mounts in /proc/self/mountinfo ("" = the v2 unified hierarchy). On
v1 (or hybrid) stats come from the v1 controllers; on pure v2 from the unified
files. Values a kernel does not provide stay 0. Mount discovery and
`remove_tree` are shared with the host (kata_shim.cgroupfs). OOM watching lives in
kata_shim.guest.oom.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kata_shim.cgroupfs import cgroup_mounts, remove_tree
from kata_shim.proto import agent_pb2

__all__ = ["cgroup_mounts", "cgroup_paths", "keyed", "read_stats", "remove_tree"]

log = logging.getLogger(__name__)
_USER_HZ = os.sysconf("SC_CLK_TCK")
_MOUNTINFO = Path("/proc/self/mountinfo")


def cgroup_paths(pid: int, mountinfo: str | None = None) -> dict[str, Path]:
    """controller → directory of `pid`'s cgroup ("" = the v2 unified cgroup)."""
    mounts = cgroup_mounts(mountinfo if mountinfo is not None else _MOUNTINFO.read_text())
    paths: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            controller = controller.removeprefix("name=")
            if controller in mounts:
                paths[controller] = mounts[controller] / rel.lstrip("/")
    return paths


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _int(path: Path) -> int:
    text = _read(path)
    return int(text) if text.isdigit() else 0


def keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" lines) as a dict of ints."""
    out = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if value.lstrip("-").isdigit():
            out[key] = max(0, int(value))
    return out


def _cpu_v1(stats: agent_pb2.CgroupStats, acct: Path, cpu: Path | None) -> None:
    usage = stats.cpu_stats.cpu_usage
    usage.total_usage = _int(acct / "cpuacct.usage")
    usage.percpu_usage.extend(int(v) for v in _read(acct / "cpuacct.usage_percpu").split())
    ticks = keyed(acct / "cpuacct.stat")
    usage.usage_in_usermode = ticks.get("user", 0) * 1_000_000_000 // _USER_HZ
    usage.usage_in_kernelmode = ticks.get("system", 0) * 1_000_000_000 // _USER_HZ
    if cpu is not None:
        throttle = keyed(cpu / "cpu.stat")
        data = stats.cpu_stats.throttling_data
        data.periods = throttle.get("nr_periods", 0)
        data.throttled_periods = throttle.get("nr_throttled", 0)
        data.throttled_time = throttle.get("throttled_time", 0)


def _memory_v1(stats: agent_pb2.CgroupStats, mem: Path) -> None:
    memory = stats.memory_stats
    table = keyed(mem / "memory.stat")
    memory.stats.update(table)
    memory.cache = table.get("cache", 0)
    memory.use_hierarchy = _read(mem / "memory.use_hierarchy") == "1"
    for target, prefix in (
        (memory.usage, "memory"),
        (memory.swap_usage, "memory.memsw"),
        (memory.kernel_usage, "memory.kmem"),
    ):
        target.usage = _int(mem / f"{prefix}.usage_in_bytes")
        target.max_usage = _int(mem / f"{prefix}.max_usage_in_bytes")
        target.failcnt = _int(mem / f"{prefix}.failcnt")
        target.limit = _int(mem / f"{prefix}.limit_in_bytes")


_BLKIO_V1 = (
    "io_service_bytes_recursive",
    "io_serviced_recursive",
    "io_queued_recursive",
    "io_service_time_recursive",
    "io_wait_time_recursive",
    "io_merged_recursive",
    "io_time_recursive",
    "sectors_recursive",
)


def _blkio_entries(text: str, target: Any) -> None:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) in (2, 3) and ":" in parts[0] and parts[-1].isdigit():
            major, minor = parts[0].split(":")
            op = parts[1] if len(parts) == 3 else ""
            target.add(major=int(major), minor=int(minor), op=op, value=int(parts[-1]))


def _blkio_v1(stats: agent_pb2.CgroupStats, blkio: Path) -> None:
    for name in _BLKIO_V1:
        target = getattr(stats.blkio_stats, name)
        text = _read(blkio / f"blkio.{name}")
        if not text and name in ("io_service_bytes_recursive", "io_serviced_recursive"):
            # no CFQ/BFQ: the throttle policy still counts bytes and ios
            text = _read(blkio / f"blkio.throttle.{name}")
        _blkio_entries(text, target)


def _hugetlb_v1(stats: agent_pb2.CgroupStats, hugetlb: Path) -> None:
    for usage_file in sorted(hugetlb.glob("hugetlb.*.usage_in_bytes")):
        size = usage_file.name.split(".")[1]
        entry = stats.hugetlb_stats[size]
        entry.usage = _int(usage_file)
        entry.max_usage = _int(hugetlb / f"hugetlb.{size}.max_usage_in_bytes")
        entry.failcnt = _int(hugetlb / f"hugetlb.{size}.failcnt")


def _pids(stats: agent_pb2.CgroupStats, path: Path) -> None:
    stats.pids_stats.current = _int(path / "pids.current")
    stats.pids_stats.limit = _int(path / "pids.max")  # "max" → 0 = unlimited


def _cpu_v2(stats: agent_pb2.CgroupStats, path: Path) -> None:
    cpu = keyed(path / "cpu.stat")
    usage = stats.cpu_stats.cpu_usage
    usage.total_usage = cpu.get("usage_usec", 0) * 1000
    usage.usage_in_usermode = cpu.get("user_usec", 0) * 1000
    usage.usage_in_kernelmode = cpu.get("system_usec", 0) * 1000
    data = stats.cpu_stats.throttling_data
    data.periods = cpu.get("nr_periods", 0)
    data.throttled_periods = cpu.get("nr_throttled", 0)
    data.throttled_time = cpu.get("throttled_usec", 0) * 1000


def _memory_v2(stats: agent_pb2.CgroupStats, path: Path) -> None:
    memory = stats.memory_stats
    table = keyed(path / "memory.stat")
    memory.stats.update(table)
    memory.cache = table.get("file", 0)
    memory.use_hierarchy = True
    memory.usage.usage = _int(path / "memory.current")
    memory.usage.max_usage = _int(path / "memory.peak")
    memory.usage.limit = _int(path / "memory.max")  # "max" → 0 = unlimited
    memory.usage.failcnt = keyed(path / "memory.events").get("max", 0)
    memory.swap_usage.usage = _int(path / "memory.swap.current")
    memory.swap_usage.limit = _int(path / "memory.swap.max")


def _io_v2(stats: agent_pb2.CgroupStats, path: Path) -> None:
    """io.stat "MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.." → v1-style entries."""
    blkio = stats.blkio_stats
    for line in _read(path / "io.stat").splitlines():
        device, *pairs = line.split()
        major, _, minor = device.partition(":")
        values = dict(p.split("=", 1) for p in pairs if "=" in p)
        for target, prefix in (
            (blkio.io_service_bytes_recursive, "bytes"),
            (blkio.io_serviced_recursive, "ios"),
        ):
            for op, key in (("Read", f"r{prefix}"), ("Write", f"w{prefix}")):
                if values.get(key, "").isdigit():
                    value = int(values[key])
                    target.add(major=int(major), minor=int(minor), op=op, value=value)


def read_stats(paths: dict[str, Path]) -> agent_pb2.CgroupStats:
    """CgroupStats from the container's cgroup directories (see cgroup_paths)."""
    stats = agent_pb2.CgroupStats()
    if "" in paths and "memory" not in paths:  # pure cgroup v2
        unified = paths[""]
        _cpu_v2(stats, unified)
        _memory_v2(stats, unified)
        _pids(stats, unified)
        _io_v2(stats, unified)
        return stats
    if "cpuacct" in paths:
        _cpu_v1(stats, paths["cpuacct"], paths.get("cpu"))
    if "memory" in paths:
        _memory_v1(stats, paths["memory"])
    if "pids" in paths:
        _pids(stats, paths["pids"])
    if "blkio" in paths:
        _blkio_v1(stats, paths["blkio"])
    if "hugetlb" in paths:
        _hugetlb_v1(stats, paths["hugetlb"])
    return stats
