"""Container cgroup statistics and OOM notifications (cgroup v1, and v2 where mounted).

Paths come from /proc/<pid>/cgroup of the container's init, resolved against
the cgroup mounts in /proc/self/mountinfo. v1 OOM events use an eventfd on
memory.oom_control (the kernel also signals it when the cgroup is removed, so
the oom_kill counter decides); v2 polls memory.events' oom_kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from kata_shim.proto import agent_pb2

__all__ = ["OomWatch", "cgroup_paths", "read_stats"]

log = logging.getLogger(__name__)
_USER_HZ = os.sysconf("SC_CLK_TCK")


def _cgroup_mounts(mountinfo: str) -> dict[str, Path]:
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
                mounts.setdefault(option.removeprefix("name="), Path(fields[4]))
    return mounts


def cgroup_paths(pid: int) -> dict[str, Path]:
    """controller → directory of `pid`'s cgroup ("" = the v2 unified cgroup)."""
    mounts = _cgroup_mounts(Path("/proc/self/mountinfo").read_text())
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


def _keyed(path: Path) -> dict[str, int]:
    out = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _cpu_v1(stats: agent_pb2.CgroupStats, acct: Path, cpu: Path | None) -> None:
    usage = stats.cpu_stats.cpu_usage
    usage.total_usage = _int(acct / "cpuacct.usage")
    usage.percpu_usage.extend(int(v) for v in _read(acct / "cpuacct.usage_percpu").split())
    ticks = _keyed(acct / "cpuacct.stat")
    usage.usage_in_usermode = ticks.get("user", 0) * 1_000_000_000 // _USER_HZ
    usage.usage_in_kernelmode = ticks.get("system", 0) * 1_000_000_000 // _USER_HZ
    if cpu is not None:
        throttle = _keyed(cpu / "cpu.stat")
        data = stats.cpu_stats.throttling_data
        data.periods = throttle.get("nr_periods", 0)
        data.throttled_periods = throttle.get("nr_throttled", 0)
        data.throttled_time = throttle.get("throttled_time", 0)


def _memory_v1(stats: agent_pb2.CgroupStats, mem: Path) -> None:
    memory = stats.memory_stats
    table = _keyed(mem / "memory.stat")
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


def _blkio_v1(stats: agent_pb2.CgroupStats, blkio: Path) -> None:
    for name, target in (
        ("io_service_bytes_recursive", stats.blkio_stats.io_service_bytes_recursive),
        ("io_serviced_recursive", stats.blkio_stats.io_serviced_recursive),
    ):
        text = _read(blkio / f"blkio.throttle.{name.removesuffix('_recursive')}") or _read(
            blkio / f"blkio.{name}"
        )
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and ":" in parts[0]:
                major, minor = parts[0].split(":")
                target.add(major=int(major), minor=int(minor), op=parts[1], value=int(parts[2]))


def _v2(stats: agent_pb2.CgroupStats, path: Path) -> None:
    cpu = _keyed(path / "cpu.stat")
    usage = stats.cpu_stats.cpu_usage
    usage.total_usage = cpu.get("usage_usec", 0) * 1000
    usage.usage_in_usermode = cpu.get("user_usec", 0) * 1000
    usage.usage_in_kernelmode = cpu.get("system_usec", 0) * 1000
    stats.memory_stats.usage.usage = _int(path / "memory.current")
    limit = _read(path / "memory.max")
    stats.memory_stats.usage.limit = int(limit) if limit.isdigit() else 0
    stats.memory_stats.stats.update(_keyed(path / "memory.stat"))
    stats.pids_stats.current = _int(path / "pids.current")


def read_stats(paths: dict[str, Path]) -> agent_pb2.CgroupStats:
    stats = agent_pb2.CgroupStats()
    if "" in paths and "memory" not in paths:
        _v2(stats, paths[""])
        return stats
    if "cpuacct" in paths:
        _cpu_v1(stats, paths["cpuacct"], paths.get("cpu"))
    if "memory" in paths:
        _memory_v1(stats, paths["memory"])
    if "pids" in paths:
        stats.pids_stats.current = _int(paths["pids"] / "pids.current")
        limit = _read(paths["pids"] / "pids.max")
        stats.pids_stats.limit = int(limit) if limit.isdigit() else 0
    if "blkio" in paths:
        _blkio_v1(stats, paths["blkio"])
    return stats


class OomWatch:
    """Calls `on_oom()` each time the container's memory cgroup OOM-kills a process."""

    def __init__(self, paths: dict[str, Path], on_oom: Callable[[], None]) -> None:
        self._on_oom = on_oom
        self._efd = -1
        self._control = -1
        self._task: asyncio.Task[None] | None = None
        self._confirming: asyncio.Task[None] | None = None
        memory = paths.get("memory")
        if memory is not None:
            self._watch_v1(memory)
        elif "" in paths:
            self._task = asyncio.ensure_future(self._poll_v2(paths[""] / "memory.events"))

    def _watch_v1(self, memory: Path) -> None:
        self._oom_control = memory / "memory.oom_control"
        self._kills = self._oom_kills()
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._control = os.open(self._oom_control, os.O_RDONLY | os.O_CLOEXEC)
        (memory / "cgroup.event_control").write_text(f"{self._efd} {self._control}")
        asyncio.get_running_loop().add_reader(self._efd, self._event)

    def _oom_kills(self) -> int:
        return _keyed(self._oom_control).get("oom_kill", 0)

    def _event(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        if self._confirming is None or self._confirming.done():
            self._confirming = asyncio.ensure_future(self._confirm())

    async def _confirm(self, attempts: int = 40) -> None:
        """The eventfd fires as the OOM starts; the kill counter moves a little later."""
        for _ in range(attempts):
            try:
                table = _keyed(self._oom_control)
            except OSError:
                return  # cgroup removed
            kills = table.get("oom_kill", 0)
            if kills > self._kills or table.get("under_oom"):
                self._kills = max(kills, self._kills)
                self._on_oom()
                return
            await asyncio.sleep(0.05)
        log.debug("memory event on %s without an OOM kill", self._oom_control)

    async def _poll_v2(self, events: Path) -> None:
        seen = _keyed(events).get("oom_kill", 0)
        while True:
            await asyncio.sleep(1.0)
            current = _keyed(events).get("oom_kill", 0)
            if current > seen:
                seen = current
                self._on_oom()

    def close(self) -> None:
        if self._efd >= 0:
            asyncio.get_running_loop().remove_reader(self._efd)
            os.close(self._efd)
            os.close(self._control)
            self._efd = self._control = -1
        for task in (self._task, self._confirming):
            if task is not None:
                task.cancel()
