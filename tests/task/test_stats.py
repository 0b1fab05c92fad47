"""CgroupStats → cgroups v1 / v2 Metrics, and the host cgroup mode detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from kata_shim.proto import agent_pb2, cgroups_v1_pb2, cgroups_v2_pb2
from kata_shim.task.stats import host_cgroup_version, stats_any, to_v1, to_v2

pytestmark = pytest.mark.timeout(10)


def sample(v2_guest: bool = False) -> agent_pb2.CgroupStats:
    stats = agent_pb2.CgroupStats()
    stats.pids_stats.current, stats.pids_stats.limit = 4, 100
    usage = stats.cpu_stats.cpu_usage
    usage.total_usage, usage.usage_in_kernelmode, usage.usage_in_usermode = 9000, 3000, 6000
    usage.percpu_usage.extend([4000, 5000])
    throttling = stats.cpu_stats.throttling_data
    throttling.periods, throttling.throttled_periods, throttling.throttled_time = 10, 2, 5000
    memory = stats.memory_stats
    memory.usage.usage, memory.usage.limit, memory.usage.max_usage = 1 << 20, 1 << 30, 2 << 20
    memory.usage.failcnt = 1
    memory.swap_usage.usage = 7
    if v2_guest:
        memory.stats.update({"anon": 11, "file": 12, "pgfault": 13, "pgmajfault": 14})
    else:
        memory.cache = 12
        memory.stats.update({"rss": 11, "pgfault": 13, "pgmajfault": 14, "total_inactive_file": 15})
    stats.blkio_stats.io_service_bytes_recursive.add(major=8, minor=0, op="Read", value=100)
    stats.blkio_stats.io_service_bytes_recursive.add(major=8, minor=0, op="Write", value=200)
    stats.hugetlb_stats["2MB"].usage = 5
    return stats


def test_v1_metrics_fields() -> None:
    metrics = to_v1(sample())
    assert (metrics.pids.current, metrics.pids.limit) == (4, 100)
    usage = metrics.cpu.usage
    assert (usage.total, usage.kernel, usage.user, list(usage.per_cpu)) == (
        9000,
        3000,
        6000,
        [4000, 5000],
    )
    assert metrics.cpu.throttling.throttled_time == 5000
    memory = metrics.memory
    assert (memory.usage.usage, memory.usage.limit, memory.usage.max) == (1 << 20, 1 << 30, 2 << 20)
    assert (memory.usage.failcnt, memory.swap.usage) == (1, 7)
    assert (memory.rss, memory.cache, memory.pg_fault, memory.pg_maj_fault) == (11, 12, 13, 14)
    assert memory.total_inactive_file == 15
    entries = [(e.op, e.value) for e in metrics.blkio.io_service_bytes_recursive]
    assert entries == [("Read", 100), ("Write", 200)]
    assert [(h.pagesize, h.usage) for h in metrics.hugetlb] == [("2MB", 5)]


def test_v1_metrics_from_a_cgroup_v2_guest() -> None:
    memory = to_v1(sample(v2_guest=True)).memory
    assert (memory.rss, memory.cache, memory.pg_fault) == (11, 12, 13)


def test_v2_metrics_fields() -> None:
    metrics = to_v2(sample(v2_guest=True))
    assert (metrics.cpu.usage_usec, metrics.cpu.user_usec, metrics.cpu.system_usec) == (9, 6, 3)
    assert (metrics.cpu.nr_periods, metrics.cpu.nr_throttled, metrics.cpu.throttled_usec) == (
        10,
        2,
        5,
    )
    memory = metrics.memory
    assert (memory.anon, memory.file, memory.usage, memory.usage_limit) == (
        11,
        12,
        1 << 20,
        1 << 30,
    )
    assert [(e.major, e.rbytes, e.wbytes) for e in metrics.io.usage] == [(8, 100, 200)]


def test_any_type_urls_are_bare() -> None:
    v1 = stats_any(sample(), version=1)
    assert v1.type_url == "io.containerd.cgroups.v1.Metrics"
    assert cgroups_v1_pb2.Metrics.FromString(v1.value).pids.current == 4
    v2 = stats_any(sample(), version=2)
    assert v2.type_url == "io.containerd.cgroups.v2.Metrics"
    assert cgroups_v2_pb2.Metrics.FromString(v2.value).pids.current == 4


def test_host_cgroup_version(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.write_text("proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    legacy = tmp_path / "legacy"
    legacy.write_text(
        "tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"
    )
    assert host_cgroup_version(str(unified)) == 2
    assert host_cgroup_version(str(legacy)) == 1
    assert host_cgroup_version(str(tmp_path / "missing")) == 1


def test_lib_shim_v2_gets_v1_with_read_and_write_per_device_even_on_a_v2_host() -> None:
    """lib-shim-v2 decodes v1 regardless of type URL; sums op == "read" vs the rest."""
    stats = sample()
    blkio = stats.blkio_stats.io_service_bytes_recursive
    blkio.add(major=8, minor=0, op="Sync", value=300)
    blkio.add(major=8, minor=0, op="Total", value=300)
    blkio.add(major=8, minor=16, op="Read", value=7)
    blkio.add(major=8, minor=16, op="Total", value=7)
    payload = stats_any(stats, version=2, for_lib_shim_v2=True)
    assert payload.type_url == "io.containerd.cgroups.v1.Metrics"
    metrics = cgroups_v1_pb2.Metrics.FromString(payload.value)
    entries = [(e.major, e.minor, e.op, e.value) for e in metrics.blkio.io_service_bytes_recursive]
    assert entries == [
        (8, 0, "read", 100),
        (8, 0, "write", 200),
        (8, 16, "read", 7),
        (8, 16, "write", 0),
    ]
    read = sum(e.value for e in metrics.blkio.io_service_bytes_recursive if e.op == "read")
    written = sum(e.value for e in metrics.blkio.io_service_bytes_recursive if e.op != "read")
    assert (read, written) == (107, 200)
    assert metrics.pids.current == 4 and metrics.memory.rss == 11
    # the other lists keep the kernel's names: only lib-shim-v2's one is reshaped
    assert stats_any(stats, version=1) != payload
