"""The lib-shim-v2 (iSulad) client profile: what it needs beyond containerd's (docs/isulad.md).

Injected (profile.client_profile) when the shim runs without `-address`
(containerd always passes one):
  * exec reaping — iSulad never Deletes an exec, so an exited exec's record is
    dropped `Tuning.exec_reap_delay` after its exit (later Wait/State: NotFound),
    and one whose Start failed at once;
  * idle exit — after a failed Create iSulad sends only Kill(SIGKILL): no
    Shutdown, and it never runs `delete`. A shim left without any task asks the
    service to finish `Tuning.idle_exit_delay` later (a new Create disarms it);
  * Stats always as v1 Metrics with blkio as read/write pairs (stats.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim.errors import ShimError
from kata_shim.process.process import Process
from kata_shim.proto import agent_pb2
from kata_shim.task import lifecycle
from kata_shim.task.containers import Container, TaskEnv
from kata_shim.task.profile import ClientProfile
from kata_shim.task.stats import stats_any
from kata_shim.task.tuning import Tuning

__all__ = ["LibShimV2Profile"]


class LibShimV2Profile(ClientProfile):
    """iSulad's profile: exec reapers, the idle-exit timer, v1 Stats (event loop only)."""

    name = "lib-shim-v2"
    #: iSulad runs no `delete` after Shutdown and may remove the bundle at once: answer
    #: only when the sandbox (and its shares of the bundle) is gone
    shutdown_waits_for_teardown = True

    def __init__(self, exit_fifo_dir: Path | None = None) -> None:
        super().__init__(exit_fifo_dir)
        self._tuning = Tuning()  # until bind()
        self._on_idle: Callable[[], None] = lambda: None
        #: exec record reapers (dropped once done) and the idle-exit timer
        self._reapers: set[asyncio.Task[None]] = set()
        self._idle_timer: asyncio.TimerHandle | None = None

    def bind(self, tuning: Tuning, on_idle: Callable[[], None]) -> None:
        self._tuning = tuning
        self._on_idle = on_idle

    def create_began(self) -> None:
        self.disarm_idle_exit()

    def create_ended(self, idle: bool) -> None:
        if idle:
            self.arm_idle_exit()  # a failed Create left the shim without a task

    def stats(self, stats: agent_pb2.CgroupStats) -> AnyMessage:
        return stats_any(stats, for_lib_shim_v2=True)

    async def start_exec(self, env: TaskEnv, container: Container, process: Process) -> int:
        """Start(exec); its record goes after the exit, or at once if Start failed."""
        try:
            pid = await lifecycle.start_exec(env, container, process)
        except ShimError:
            if container.execs.get(process.exec_id) is process:
                with contextlib.suppress(ShimError):
                    await lifecycle.delete_exec(container, process)
            raise
        self.reap_later(container, process)
        return pid

    def reap_later(self, container: Container, process: Process) -> None:
        """Drop the started exec's record `exec_reap_delay` after its exit."""

        async def reap() -> None:
            await process.wait()
            await asyncio.sleep(self._tuning.exec_reap_delay)
            if container.execs.get(process.exec_id) is process:
                with contextlib.suppress(ShimError):
                    await lifecycle.delete_exec(container, process)

        task = asyncio.get_running_loop().create_task(reap())
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    def arm_idle_exit(self) -> None:
        """The service has no task (the caller checked): call on_idle after the delay."""
        if self._idle_timer is None:
            delay = self._tuning.idle_exit_delay
            self._idle_timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def disarm_idle_exit(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _expired(self) -> None:
        self._idle_timer = None
        self._on_idle()

    def close(self) -> None:
        self.disarm_idle_exit()
        for reaper in list(self._reapers):
            reaper.cancel()
