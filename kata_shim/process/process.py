"""One container process (init or exec) as the shim sees it.

Owns the process's state (changed only through the transition table), its
per-process lock and its set-once exit future. Rules: state-changing
operations (start, pause/resume, exit recording, delete) run under `lock`;
plain reads (State, Connect, Kill's checks) do not take it. The exit is
recorded exactly once (`record_exit`); every Wait awaits the same future,
shielded, so a cancelled Wait never disturbs other waiters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from kata_shim.logids import id_logger
from kata_shim.process.states import Op, ProcessState, transition

if TYPE_CHECKING:
    from kata_shim.io.pumps import Pumps
    from kata_shim.proto import oci_pb2

__all__ = ["ExitRecord", "Process", "Stdio"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExitRecord:
    """How and when a process ended: the status containerd sees (0-255) and wall-clock ns."""

    status: int
    exited_at_ns: int

    def timestamp(self) -> Timestamp:
        stamp = Timestamp()
        stamp.FromNanoseconds(self.exited_at_ns)
        return stamp


@dataclass(frozen=True, slots=True)
class Stdio:
    """The client's stdio locations for a process (fifo paths, file:// or binary:// URIs)."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


class Process:
    """An init (exec_id "") or exec process of one container."""

    def __init__(self, container_id: str, exec_id: str, agent_exec_id: str, stdio: Stdio) -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        #: the id the agent knows the process by (container id for the init, a UUID for execs)
        self.agent_exec_id = agent_exec_id
        self.stdio = stdio
        #: serialises start / pause / resume / exit recording / delete of this process
        self.lock = asyncio.Lock()
        self._state = ProcessState.CREATED  # guarded by `lock`; read anywhere
        self._exit: asyncio.Future[ExitRecord] = asyncio.get_running_loop().create_future()
        #: signals Kill delivered to this process (event loop only; read by exit normalisation)
        self.delivered_signals: set[int] = set()
        #: exec only: the process to run (ConsoleSize updated by ResizePty before Start)
        self.spec: oci_pb2.Process | None = None
        #: host stdio pumps; set when the agent process exists (Create / Start(exec))
        self.pumps: Pumps | None = None
        #: the exit-watch task (drain → WaitProcess → exit), owned by the task layer
        self.exit_watch: asyncio.Task[None] | None = None
        #: CloseIO(stdin) arrived before the pumps existed
        self.stdin_close_requested = False
        self.log = id_logger(log, container_id, exec_id)

    # identity -------------------------------------------------------------------
    @property
    def is_init(self) -> bool:
        return self.exec_id == ""

    @property
    def event_id(self) -> str:
        """TaskExit.id: the container id for the init, the exec id otherwise."""
        return self.exec_id or self.container_id

    # state ----------------------------------------------------------------------
    @property
    def state(self) -> ProcessState:
        return self._state

    def check(self, op: Op) -> ProcessState:
        """Raise FailedPrecondition unless `op` is allowed now; return the would-be state."""
        return transition(self._state, op)

    def apply(self, op: Op) -> ProcessState:
        """Move to the state `op` leads to (FailedPrecondition if not allowed)."""
        self._state = transition(self._state, op)
        return self._state

    # exit -----------------------------------------------------------------------
    @property
    def exit_record(self) -> ExitRecord | None:
        return self._exit.result() if self._exit.done() else None

    @property
    def exited(self) -> bool:
        return self._exit.done()

    def record_exit(self, status: int, when_ns: int | None = None) -> ExitRecord | None:
        """Store the exit (STOPPED + status + time) once; None when already recorded.

        Callers hold `lock` (see exits.finish_exit), so a concurrent Start or
        Pause never interleaves with the state change.
        """
        if self._exit.done():
            return None
        self._state = transition(self._state, Op.EXIT)
        record = ExitRecord(status, time.time_ns() if when_ns is None else when_ns)
        self._exit.set_result(record)
        return record

    async def wait(self) -> ExitRecord:
        """Block until the exit is recorded (returns at once afterwards)."""
        return await asyncio.shield(self._exit)
