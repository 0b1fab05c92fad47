"""The agent's CgroupStats → the Metrics containerd expects, chosen by the HOST cgroup mode.

containerd (and CRI, `ctr task metrics`, iSulad's lib-shim-v2) decode Stats by
the Any's type URL: `io.containerd.cgroups.v1.Metrics` on cgroup-v1 hosts,
`io.containerd.cgroups.v2.Metrics` on cgroup-v2 hosts, bare names. The guest
may run either cgroup version, so memory.stat keys of both are understood
(v1 `rss`/`cache`, v2 `anon`/`file`).

lib-shim-v2 (iSulad) is different: it decodes the value as v1 Metrics whatever
the host or the type URL, and sums blkio `io_service_bytes_recursive` as
op == "read" vs everything else. For it (`for_lib_shim_v2`), the Any is
always v1 and that list holds exactly one lowercase "read" and one "write"
entry per device, so `isula stats` neither shows read 0 nor counts
Sync/Async/Total bytes as written.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path

from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim.events.envelope import bare_any
from kata_shim.proto import agent_pb2, cgroups_v1_pb2, cgroups_v2_pb2

__all__ = ["host_cgroup_version", "lib_shim_v2_blkio", "stats_any", "to_v1", "to_v2"]


@functools.cache
def host_cgroup_version(mounts: str = "/proc/self/mounts") -> int:
    """2 when /sys/fs/cgroup is a cgroup2 mount (unified hierarchy), else 1."""
    try:
        text = Path(mounts).read_text()
    except OSError:
        return 1
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "/sys/fs/cgroup":
            return 2 if fields[2] == "cgroup2" else 1
    return 1


def _stat(stats: Mapping[str, int], *keys: str) -> int:
    """The first of `keys` present in memory.stat (v1 name first, v2 name after)."""
    for key in keys:
        if key in stats:
            return stats[key]
    return 0


# v1 MemoryStat field → memory.stat keys, v1 name first, v2 equivalents after
_V1_MEMORY = {
    "rss": ("rss", "anon"),
    "rss_huge": ("rss_huge", "anon_thp"),
    "mapped_file": ("mapped_file", "file_mapped"),
    "dirty": ("dirty", "file_dirty"),
    "writeback": ("writeback", "file_writeback"),
    "pg_pg_in": ("pgpgin",),
    "pg_pg_out": ("pgpgout",),
    "pg_fault": ("pgfault",),
    "pg_maj_fault": ("pgmajfault",),
    "inactive_anon": ("inactive_anon",),
    "active_anon": ("active_anon",),
    "inactive_file": ("inactive_file",),
    "active_file": ("active_file",),
    "unevictable": ("unevictable",),
}


def _entry(target: cgroups_v1_pb2.MemoryEntry, data: agent_pb2.MemoryData) -> None:
    target.usage, target.max, target.failcnt, target.limit = (
        data.usage,
        data.max_usage,
        data.failcnt,
        data.limit,
    )


def _v1_memory(out: cgroups_v1_pb2.MemoryStat, mem: agent_pb2.MemoryStats) -> None:
    stats = dict(mem.stats)
    out.cache = mem.cache or _stat(stats, "cache", "file")
    for name, keys in _V1_MEMORY.items():
        setattr(out, name, _stat(stats, *keys))
        setattr(out, f"total_{name}", _stat(stats, *(f"total_{k}" for k in keys), *keys))
    out.total_cache = _stat(stats, "total_cache", "cache", "file")
    out.hierarchical_memory_limit = _stat(stats, "hierarchical_memory_limit")
    out.hierarchical_swap_limit = _stat(stats, "hierarchical_memsw_limit")
    _entry(out.usage, mem.usage)
    _entry(out.swap, mem.swap_usage)
    _entry(out.kernel, mem.kernel_usage)


def _v1_blkio(entries: Iterable[agent_pb2.BlkioStatsEntry]) -> list[cgroups_v1_pb2.BlkIOEntry]:
    return [
        cgroups_v1_pb2.BlkIOEntry(op=e.op, major=e.major, minor=e.minor, value=e.value)
        for e in entries
    ]


def to_v1(stats: agent_pb2.CgroupStats) -> cgroups_v1_pb2.Metrics:
    """cgroups v1 Metrics (what lib-shim-v2 and v1 hosts decode)."""
    out = cgroups_v1_pb2.Metrics()
    out.pids.current, out.pids.limit = stats.pids_stats.current, stats.pids_stats.limit
    usage = stats.cpu_stats.cpu_usage
    out.cpu.usage.total = usage.total_usage
    out.cpu.usage.kernel = usage.usage_in_kernelmode
    out.cpu.usage.user = usage.usage_in_usermode
    out.cpu.usage.per_cpu.extend(usage.percpu_usage)
    throttling = stats.cpu_stats.throttling_data
    out.cpu.throttling.periods = throttling.periods
    out.cpu.throttling.throttled_periods = throttling.throttled_periods
    out.cpu.throttling.throttled_time = throttling.throttled_time
    _v1_memory(out.memory, stats.memory_stats)
    blkio = stats.blkio_stats
    for field in agent_pb2.BlkioStats.DESCRIPTOR.fields:
        getattr(out.blkio, field.name).extend(_v1_blkio(getattr(blkio, field.name)))
    for pagesize, huge in sorted(stats.hugetlb_stats.items()):
        out.hugetlb.add(
            pagesize=pagesize, usage=huge.usage, max=huge.max_usage, failcnt=huge.failcnt
        )
    return out


def to_v2(stats: agent_pb2.CgroupStats) -> cgroups_v2_pb2.Metrics:
    """cgroups v2 Metrics (what containerd decodes on a unified-hierarchy host)."""
    out = cgroups_v2_pb2.Metrics()
    out.pids.current, out.pids.limit = stats.pids_stats.current, stats.pids_stats.limit
    usage = stats.cpu_stats.cpu_usage
    throttling = stats.cpu_stats.throttling_data
    out.cpu.usage_usec = usage.total_usage // 1000
    out.cpu.user_usec = usage.usage_in_usermode // 1000
    out.cpu.system_usec = usage.usage_in_kernelmode // 1000
    out.cpu.nr_periods = throttling.periods
    out.cpu.nr_throttled = throttling.throttled_periods
    out.cpu.throttled_usec = throttling.throttled_time // 1000
    mem = stats.memory_stats
    table = dict(mem.stats)
    for field in cgroups_v2_pb2.MemoryStat.DESCRIPTOR.fields:
        if field.name in table:
            setattr(out.memory, field.name, table[field.name])
    out.memory.anon = out.memory.anon or _stat(table, "rss")
    out.memory.file = out.memory.file or mem.cache or _stat(table, "cache")
    out.memory.pgfault = out.memory.pgfault or _stat(table, "pgfault")
    out.memory.usage, out.memory.usage_limit = mem.usage.usage, mem.usage.limit
    out.memory.swap_usage, out.memory.swap_limit = mem.swap_usage.usage, mem.swap_usage.limit
    for item in stats.blkio_stats.io_service_bytes_recursive:
        _v2_io(out, item)
    for pagesize, huge in sorted(stats.hugetlb_stats.items()):
        out.hugetlb.add(pagesize=pagesize, current=huge.usage, max=huge.max_usage)
    return out


def _v2_io(out: cgroups_v2_pb2.Metrics, item: agent_pb2.BlkioStatsEntry) -> None:
    entry = next((e for e in out.io.usage if (e.major, e.minor) == (item.major, item.minor)), None)
    if entry is None:
        entry = out.io.usage.add(major=item.major, minor=item.minor)
    if item.op.lower() == "read":
        entry.rbytes = item.value
    elif item.op.lower() == "write":
        entry.wbytes = item.value


def lib_shim_v2_blkio(metrics: cgroups_v1_pb2.Metrics) -> None:
    """Reduce io_service_bytes_recursive to one "read" and one "write" entry per device."""
    entries = metrics.blkio.io_service_bytes_recursive
    devices: dict[tuple[int, int], dict[str, int]] = {}
    for entry in entries:
        totals = devices.setdefault((entry.major, entry.minor), {"read": 0, "write": 0})
        op = entry.op.lower()
        if op in totals:
            totals[op] += entry.value
    del entries[:]
    for (major, minor), totals in sorted(devices.items()):
        for op in ("read", "write"):
            entries.add(op=op, major=major, minor=minor, value=totals[op])


def stats_any(
    stats: agent_pb2.CgroupStats, version: int | None = None, *, for_lib_shim_v2: bool = False
) -> AnyMessage:
    """Stats as the Any the client expects (v1 or v2 Metrics by host; v1 for lib-shim-v2)."""
    if for_lib_shim_v2:
        metrics = to_v1(stats)
        lib_shim_v2_blkio(metrics)
        return bare_any(metrics)
    if (version or host_cgroup_version()) == 2:
        return bare_any(to_v2(stats))
    return bare_any(to_v1(stats))
