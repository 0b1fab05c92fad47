"""One container in the agent: its state, its lock, its init and exec processes.

Owns the container's state (changed only through guest.states.transition),
the lock that serialises its lifecycle calls, and the recording of its init's
exit. Rules: `apply` runs under `lock` (it refuses otherwise); the init's exit
is recorded by a task that takes the lock (`watch_exit`), or by whoever holds
the lock and has seen the exit first (RemoveContainer), exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from kata_shim.guest.oom import OomWatch
from kata_shim.guest.processes import GuestProcess
from kata_shim.guest.states import ContainerState, Op, transition
from kata_shim.logids import IdLogger, id_logger

__all__ = ["GuestContainer"]

log = logging.getLogger(__name__)

_EXITED = (ContainerState.STOPPED, ContainerState.DELETED)


@dataclass(eq=False)
class GuestContainer:
    """A container the agent created with `runc create`, until RemoveContainer."""

    id: str
    bundle: Path
    init: GuestProcess
    cgroups: dict[str, Path]
    execs: dict[str, GuestProcess] = field(default_factory=dict)
    oom: OomWatch | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    log: IdLogger = field(init=False)
    _state: ContainerState = field(default=ContainerState.CREATED, init=False)
    _exit_task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.log = id_logger(log, self.id)

    @property
    def state(self) -> ContainerState:
        return self._state

    def check(self, op: Op) -> None:
        """Raise FailedPrecondition unless `op` is allowed now."""
        transition(self.id, self._state, op)

    def apply(self, op: Op) -> ContainerState:
        """Move to the state `op` leads to; the caller holds `lock`."""
        if not self.lock.locked():
            raise RuntimeError(f"container {self.id}: {op.name} outside its lock")
        self._state = transition(self.id, self._state, op)
        return self._state

    def watch_exit(self) -> None:
        """Once the init exits, record it (→ STOPPED) under the lock."""
        self.init.exited.add_done_callback(self._init_exited)

    def _init_exited(self, _exited: asyncio.Future[int]) -> None:
        self._exit_task = asyncio.get_running_loop().create_task(self._record_exit_locked())

    async def _record_exit_locked(self) -> None:
        async with self.lock:
            self.record_exit()

    def record_exit(self) -> None:
        """STOPPED, once the init has exited (a no-op when already recorded); holds `lock`."""
        if self._state in _EXITED or self.init.running:
            return
        self.apply(Op.EXIT)
        self.log.info("init exited with %d", self.init.exited.result())
