"""cgroup paths and statistics from fake v1/v2 trees; tree removal; the v2 OOM poll."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kata_shim.guest import cgroups
from kata_shim.guest.oom import OomWatch

HYBRID_MOUNTINFO = """\
25 31 0:22 / /sys ro,nosuid shared:7 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup ro,nosuid shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,name=systemd
29 26 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct
30 26 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory
31 26 0:28 / /sys/fs/cgroup/pids rw,nosuid shared:13 - cgroup cgroup rw,pids
"""

pytestmark = [pytest.mark.timeout(20)]


def test_cgroup_mounts_of_a_hybrid_host() -> None:
    mounts = cgroups.cgroup_mounts(HYBRID_MOUNTINFO)
    assert mounts == {
        "": Path("/sys/fs/cgroup/unified"),
        "systemd": Path("/sys/fs/cgroup/systemd"),
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "pids": Path("/sys/fs/cgroup/pids"),
    }


def test_cgroup_paths_of_this_process_exist() -> None:
    paths = cgroups.cgroup_paths(os.getpid())
    assert paths and all(path.is_dir() for path in paths.values())


def write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def v1_tree(tmp: Path) -> dict[str, Path]:
    acct = write(
        tmp / "cpuacct",
        {
            "cpuacct.usage": "5000000000\n",
            "cpuacct.usage_percpu": "3000000000 2000000000 \n",
            "cpuacct.stat": f"user {2 * os.sysconf('SC_CLK_TCK')}\nsystem 0\n",
        },
    )
    cpu = write(tmp / "cpu", {"cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 99\n"})
    stat = "cache 4096\nrss 8192\npgfault 77\nswap 0\ntotal_inactive_file 123\ntotal_rss 8192\n"
    memory = write(
        tmp / "memory",
        {
            "memory.stat": stat,
            "memory.usage_in_bytes": "12288\n",
            "memory.max_usage_in_bytes": "20000\n",
            "memory.failcnt": "3\n",
            "memory.limit_in_bytes": "16777216\n",
            "memory.memsw.usage_in_bytes": "12288\n",
            "memory.use_hierarchy": "1\n",
        },
    )
    pids = write(tmp / "pids", {"pids.current": "4\n", "pids.max": "max\n"})
    blkio = write(
        tmp / "blkio",
        {
            "blkio.io_service_bytes_recursive": "",
            "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
            "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 0\nTotal 1\n",
            "blkio.io_time_recursive": "8:0 55\n",
        },
    )
    hugetlb = write(
        tmp / "hugetlb",
        {
            "hugetlb.2MB.usage_in_bytes": "2097152\n",
            "hugetlb.2MB.max_usage_in_bytes": "4194304\n",
            "hugetlb.2MB.failcnt": "1\n",
        },
    )
    return {
        "cpuacct": acct,
        "cpu": cpu,
        "memory": memory,
        "pids": pids,
        "blkio": blkio,
        "hugetlb": hugetlb,
        "": tmp / "unified",  # hybrid: the unified hierarchy is there, v1 wins
    }


def test_v1_stats(tmp_path: Path) -> None:
    stats = cgroups.read_stats(v1_tree(tmp_path))
    usage = stats.cpu_stats.cpu_usage
    assert usage.total_usage == 5_000_000_000
    assert list(usage.percpu_usage) == [3_000_000_000, 2_000_000_000]
    assert (usage.usage_in_usermode, usage.usage_in_kernelmode) == (2_000_000_000, 0)
    throttling = stats.cpu_stats.throttling_data
    assert (throttling.periods, throttling.throttled_periods, throttling.throttled_time) == (
        10,
        4,
        99,
    )
    memory = stats.memory_stats
    assert (memory.usage.usage, memory.usage.max_usage) == (12288, 20000)
    assert (memory.usage.failcnt, memory.usage.limit) == (3, 16 << 20)
    assert memory.swap_usage.usage == 12288 and memory.cache == 4096 and memory.use_hierarchy
    assert memory.stats["rss"] == 8192 and memory.stats["pgfault"] == 77
    assert memory.stats["total_inactive_file"] == 123 and memory.stats["swap"] == 0
    assert (stats.pids_stats.current, stats.pids_stats.limit) == (4, 0)
    service = stats.blkio_stats.io_service_bytes_recursive
    assert [(e.major, e.minor, e.op, e.value) for e in service] == [
        (8, 0, "Read", 4096),
        (8, 0, "Write", 0),
    ]
    assert len(stats.blkio_stats.io_serviced_recursive) == 2
    assert [(e.op, e.value) for e in stats.blkio_stats.io_time_recursive] == [("", 55)]
    huge = stats.hugetlb_stats["2MB"]
    assert (huge.usage, huge.max_usage, huge.failcnt) == (2 << 20, 4 << 20, 1)


def test_v2_stats(tmp_path: Path) -> None:
    unified = write(
        tmp_path / "unified",
        {
            "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
            "nr_periods 3\nnr_throttled 1\nthrottled_usec 7\n",
            "memory.current": "65536\n",
            "memory.peak": "70000\n",
            "memory.max": "max\n",
            "memory.stat": "anon 40960\nfile 8192\npgfault 12\ninactive_file 100\n",
            "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
            "memory.swap.current": "0\n",
            "pids.current": "2\n",
            "pids.max": "100\n",
            "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        },
    )
    stats = cgroups.read_stats({"": unified})
    usage = stats.cpu_stats.cpu_usage
    assert (usage.total_usage, usage.usage_in_usermode, usage.usage_in_kernelmode) == (
        1_500_000,
        1_000_000,
        500_000,
    )
    assert stats.cpu_stats.throttling_data.throttled_time == 7000
    memory = stats.memory_stats
    assert (memory.usage.usage, memory.usage.max_usage, memory.usage.limit) == (65536, 70000, 0)
    assert memory.usage.failcnt == 2 and memory.cache == 8192
    assert memory.stats["anon"] == 40960 and memory.stats["inactive_file"] == 100
    assert (stats.pids_stats.current, stats.pids_stats.limit) == (2, 100)
    entries = stats.blkio_stats.io_service_bytes_recursive
    assert [(e.op, e.value) for e in entries] == [("Read", 4096), ("Write", 8192)]
    assert [(e.op, e.value) for e in stats.blkio_stats.io_serviced_recursive] == [
        ("Read", 1),
        ("Write", 2),
    ]


def test_missing_files_give_zeros_not_errors(tmp_path: Path) -> None:
    stats = cgroups.read_stats({"memory": tmp_path / "gone", "cpuacct": tmp_path / "gone"})
    assert stats.memory_stats.usage.usage == 0 and stats.cpu_stats.cpu_usage.total_usage == 0


def test_remove_tree_removes_empty_dirs_in_every_hierarchy(tmp_path: Path) -> None:
    mountinfo = ""
    for i, (fstype, options) in enumerate((("cgroup", "rw,memory"), ("cgroup2", "rw"))):
        root = tmp_path / f"h{i}"
        (root / "kata_shim" / "sb" / "c1").mkdir(parents=True)
        mountinfo += f"{30 + i} 26 0:{30 + i} / {root} rw - {fstype} {fstype} {options}\n"
    (tmp_path / "h0" / "kata_shim" / "other").mkdir()
    busy = tmp_path / "h1" / "kata_shim" / "sb" / "busy"
    busy.mkdir()
    (busy / "cgroup.procs").write_text("1\n")  # a plain directory with a file cannot be rmdir'd
    left = cgroups.remove_tree("/kata_shim/sb", mountinfo)
    assert left == [tmp_path / "h1" / "kata_shim" / "sb"]
    assert not (tmp_path / "h0" / "kata_shim" / "sb").exists()
    assert (tmp_path / "h0" / "kata_shim" / "other").is_dir()  # a sibling sandbox survives
    assert busy.is_dir() and not (tmp_path / "h1" / "kata_shim" / "sb" / "c1").exists()


@pytest.mark.timeout(10)
def test_v2_oom_watch_reports_each_new_kill_once(tmp_path: Path) -> None:
    async def main() -> None:
        events = write(tmp_path, {"memory.events": "oom 0\noom_kill 0\n"}) / "memory.events"
        seen: list[int] = []
        watch = OomWatch({"": tmp_path}, lambda: seen.append(1), poll_interval=0.02)
        await asyncio.sleep(0.1)
        assert seen == []
        events.write_text("oom 1\noom_kill 1\n")
        await asyncio.sleep(0.1)
        assert seen == [1]
        events.write_text("oom 3\noom_kill 3\n")
        await asyncio.sleep(0.1)
        assert seen == [1, 1]
        watch.close()

    asyncio.run(main())


def test_oom_watch_without_a_memory_cgroup_is_inert() -> None:
    async def main() -> None:
        watch = OomWatch({}, lambda: None)
        watch.close()

    asyncio.run(main())
