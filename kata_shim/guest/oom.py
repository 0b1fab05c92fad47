"""OOM notifications for one container's memory cgroup (cgroup v1 and v2).

v1: an eventfd registered on memory.oom_control through cgroup.event_control.
The kernel signals it when the cgroup is under OOM and also when the cgroup is
removed, so an event only counts once oom_control's oom_kill counter moved (or
under_oom is set). v2: memory.events' oom_kill counter, polled. Each confirmed
OOM calls `on_oom()` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from kata_shim.guest.cgroups import keyed

__all__ = ["OomWatch"]

log = logging.getLogger(__name__)


class OomWatch:
    """Calls `on_oom()` each time the container's memory cgroup OOM-kills a process."""

    def __init__(
        self, paths: dict[str, Path], on_oom: Callable[[], None], *, poll_interval: float = 0.5
    ) -> None:
        self._on_oom = on_oom
        self._efd = self._control = -1
        self._task: asyncio.Task[None] | None = None
        self._confirming: asyncio.Task[None] | None = None
        memory = paths.get("memory")
        if memory is not None:
            self._oom_control = memory / "memory.oom_control"
            self._kills = keyed(self._oom_control).get("oom_kill", 0)
            self._watch_v1(memory)
        elif "" in paths:
            events = paths[""] / "memory.events"
            self._task = asyncio.ensure_future(self._poll_v2(events, poll_interval))

    def _watch_v1(self, memory: Path) -> None:
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            self._control = os.open(self._oom_control, os.O_RDONLY | os.O_CLOEXEC)
            (memory / "cgroup.event_control").write_text(f"{self._efd} {self._control}")
        except OSError:
            self.close()
            raise
        asyncio.get_running_loop().add_reader(self._efd, self._event)

    def _event(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._efd)
        if self._confirming is None or self._confirming.done():
            self._confirming = asyncio.ensure_future(self._confirm())

    async def _confirm(self, attempts: int = 40) -> None:
        """The eventfd fires as the OOM starts; the kill counter moves a little later."""
        for _ in range(attempts):
            if not self._oom_control.exists():
                return  # cgroup removed
            table = keyed(self._oom_control)
            kills = table.get("oom_kill", 0)
            if kills > self._kills or table.get("under_oom"):
                self._kills = max(kills, self._kills)
                self._on_oom()
                return
            await asyncio.sleep(0.05)
        log.debug("memory event on %s without an OOM kill", self._oom_control)

    async def _poll_v2(self, events: Path, interval: float) -> None:
        seen = keyed(events).get("oom_kill", 0)
        while events.exists():
            await asyncio.sleep(interval)
            current = keyed(events).get("oom_kill", 0)
            if current > seen:
                seen = current
                self._on_oom()

    def close(self) -> None:
        if self._efd >= 0:
            with contextlib.suppress(RuntimeError):  # no running loop / reader never added
                asyncio.get_running_loop().remove_reader(self._efd)
            os.close(self._efd)
            self._efd = -1
        if self._control >= 0:
            os.close(self._control)
            self._control = -1
        for task in (self._task, self._confirming):
            if task is not None:
                task.cancel()
