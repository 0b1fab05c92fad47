"""Exit fan-out and the ordering rules between exits (docs/exits.md has the why).

Rules enforced here:
* an exit is recorded once, under the process lock, and the TaskExit is queued
  in the same step (`finish_exit`) — so the record exists before Wait returns
  and before the event, and a Start that holds the lock queues its TaskStart first;
* per container (`ExitOrder`): execs that are starting or running hold back the
  init's exit; once the init's exit is observed no exec may start;
* `normalise_status`: signalled → 128+signo even from agents that report the
  bare signal number; anything unknown or out of range → 255, never 0.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from kata_shim.errors import FailedPrecondition
from kata_shim.process.process import ExitRecord, Process

__all__ = ["UNKNOWN_EXIT", "ExitOrder", "finish_exit", "normalise_status"]

#: what a process whose real status cannot be known (agent or sandbox gone) exits with
UNKNOWN_EXIT = 255

# Signals whose default action does not terminate the process: a process that
# got one of these and exits with that number did so on its own.
_NON_FATAL = frozenset(
    s.value
    for s in (
        signal.SIGCHLD,
        signal.SIGCONT,
        signal.SIGURG,
        signal.SIGWINCH,
        signal.SIGSTOP,
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGTTOU,
    )
)


def normalise_status(raw: int, delivered: set[int] | frozenset[int]) -> int:
    """The exit status to report for the agent's `raw` WaitProcess status.

    Out-of-range values become 255. A value 1..127 that equals a terminating
    signal this shim delivered to the process is taken as an old agent's bare
    signal number (kata-containers#13251) and becomes 128+signo.
    """
    if raw < 0 or raw > 255:
        return UNKNOWN_EXIT
    if 0 < raw < 128 and raw in delivered and raw not in _NON_FATAL:
        return 128 + raw
    return raw


async def finish_exit(
    process: Process, status: int, on_recorded: Callable[[Process, ExitRecord], None]
) -> ExitRecord | None:
    """Record `process`'s exit once and run `on_recorded` (queue TaskExit) in the same step.

    Takes the process lock, so it waits for a Start still queueing TaskStart.
    Returns None when the exit had already been recorded (the event is not repeated).
    """
    async with process.lock:
        record = process.record_exit(status)
        if record is None:
            return None
        on_recorded(process, record)
    return record


class ExitOrder:
    """Per container: exec exits before the init's; no exec start after the init's exit.

    All fields are touched by the event loop only, in await-free sections.
    """

    def __init__(self) -> None:
        self._active: set[str] = set()  # exec ids starting or running, exit not yet published
        self._idle = asyncio.Event()  # set while `_active` is empty
        self._idle.set()
        #: the init's exit was observed (WaitProcess returned) — exec starts are refused
        self.init_exited = False

    @property
    def active(self) -> frozenset[str]:
        return frozenset(self._active)

    def begin_exec(self, exec_id: str) -> None:
        """Register an exec about to start; FailedPrecondition once the init has exited."""
        if self.init_exited:
            raise FailedPrecondition(f"cannot start exec {exec_id}: the init process has exited")
        self._active.add(exec_id)
        self._idle.clear()

    def end_exec(self, exec_id: str) -> None:
        """The exec's exit is published (or its start failed). Idempotent."""
        self._active.discard(exec_id)
        if not self._active:
            self._idle.set()

    async def wait_execs(self, timeout: float) -> bool:
        """Wait until no exec is active; False if `timeout` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
