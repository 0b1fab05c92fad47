"""The process state machine as data: one table of (state, op) → next state.

Rule 1: every state change of a process goes through `transition`, so the
table below is the complete list of what may happen; a missing key is a
wrong-state call and becomes FailedPrecondition("cannot <op> process in state
<state>"). Ops that do not change the state (kill, exec, update, ...) map a
state to itself and exist only to say *where* they are allowed.
Rule 2: transient states are real members (PAUSING), not side flags.
`docs/make_state_diagram.py` renders TRANSITIONS; docs/state-machine.md explains it.
"""

from __future__ import annotations

import enum

from kata_shim.errors import FailedPrecondition
from kata_shim.proto import task_types_pb2

__all__ = ["TRANSITIONS", "Op", "ProcessState", "status_of", "transition"]


class ProcessState(enum.Enum):
    """Lifecycle of one container process (init or exec)."""

    CREATED = "created"  #: exists in the agent (init) or only in the shim (exec); not started
    RUNNING = "running"  #: started, exit not yet recorded
    PAUSING = "pausing"  #: PauseContainer in flight (init only)
    PAUSED = "paused"  #: frozen (init only; execs report their container's state)
    STOPPED = "stopped"  #: exit recorded (status + time); Wait returns
    DELETED = "deleted"  #: removed; the record is gone from the container


class Op(enum.Enum):
    """What can be asked of a process; the value is the verb used in error messages."""

    START = "start"
    PAUSE = "pause"
    PAUSED = "finish pausing"  # PauseContainer succeeded
    UNPAUSE = "abandon pausing"  # PauseContainer failed: roll back
    RESUME = "resume"
    EXIT = "record the exit of"
    DELETE = "delete"
    KILL = "kill"
    EXEC = "exec in"
    UPDATE = "update"
    RESIZE = "resize"
    CLOSE_IO = "close io of"


_S = ProcessState

TRANSITIONS: dict[tuple[ProcessState, Op], ProcessState] = {
    (_S.CREATED, Op.START): _S.RUNNING,
    (_S.CREATED, Op.EXIT): _S.STOPPED,
    (_S.CREATED, Op.DELETE): _S.DELETED,
    (_S.CREATED, Op.KILL): _S.CREATED,
    (_S.CREATED, Op.EXEC): _S.CREATED,
    (_S.CREATED, Op.UPDATE): _S.CREATED,
    (_S.CREATED, Op.RESIZE): _S.CREATED,
    (_S.CREATED, Op.CLOSE_IO): _S.CREATED,
    (_S.RUNNING, Op.PAUSE): _S.PAUSING,
    (_S.RUNNING, Op.EXIT): _S.STOPPED,
    (_S.RUNNING, Op.KILL): _S.RUNNING,
    (_S.RUNNING, Op.EXEC): _S.RUNNING,
    (_S.RUNNING, Op.UPDATE): _S.RUNNING,
    (_S.RUNNING, Op.RESIZE): _S.RUNNING,
    (_S.RUNNING, Op.CLOSE_IO): _S.RUNNING,
    (_S.PAUSING, Op.PAUSED): _S.PAUSED,
    (_S.PAUSING, Op.UNPAUSE): _S.RUNNING,
    (_S.PAUSING, Op.EXIT): _S.STOPPED,
    (_S.PAUSING, Op.KILL): _S.PAUSING,
    (_S.PAUSING, Op.RESIZE): _S.PAUSING,
    (_S.PAUSING, Op.CLOSE_IO): _S.PAUSING,
    (_S.PAUSED, Op.RESUME): _S.RUNNING,
    (_S.PAUSED, Op.EXIT): _S.STOPPED,
    (_S.PAUSED, Op.KILL): _S.PAUSED,
    (_S.PAUSED, Op.EXEC): _S.PAUSED,
    (_S.PAUSED, Op.UPDATE): _S.PAUSED,
    (_S.PAUSED, Op.RESIZE): _S.PAUSED,
    (_S.PAUSED, Op.CLOSE_IO): _S.PAUSED,
    (_S.STOPPED, Op.DELETE): _S.DELETED,
    (_S.STOPPED, Op.CLOSE_IO): _S.STOPPED,
}


def transition(state: ProcessState, op: Op) -> ProcessState:
    """The state after `op`, or FailedPrecondition when `op` is not allowed in `state`."""
    try:
        return TRANSITIONS[(state, op)]
    except KeyError:
        raise FailedPrecondition(f"cannot {op.value} process in state {state.value}") from None


_STATUS = {
    _S.CREATED: task_types_pb2.CREATED,
    _S.RUNNING: task_types_pb2.RUNNING,
    _S.PAUSING: task_types_pb2.PAUSING,
    _S.PAUSED: task_types_pb2.PAUSED,
    _S.STOPPED: task_types_pb2.STOPPED,
    _S.DELETED: task_types_pb2.STOPPED,
}


def status_of(state: ProcessState) -> int:
    """The containerd.v1.types.Status value reported for `state`."""
    return _STATUS[state]
