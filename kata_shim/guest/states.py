"""The agent's container state machine as data: one table of (state, op) → next state.

The guest twin of kata_shim/process/states.py (the shim's process table).
Every state change of a GuestContainer goes through `transition`, under the
container's lock; a missing key is a wrong-state call and becomes
FailedPrecondition("container <id> is <state>, not <states that allow it>"),
the error the agent has always returned. Ops that keep the state (update,
exec) map a state to itself and exist only to say *where* they are allowed.
EXIT is the init process's exit, recorded once; DELETE is RemoveContainer,
after the init is gone.
"""

from __future__ import annotations

import enum

from kata_shim.errors import FailedPrecondition

__all__ = ["TRANSITIONS", "ContainerState", "Op", "allowed_in", "transition"]


class ContainerState(enum.Enum):
    """Lifecycle of one container in the agent (its init process's lifecycle)."""

    CREATED = "created"  #: `runc create` done, init waiting to be started
    RUNNING = "running"  #: `runc start` done, init not yet exited
    PAUSED = "paused"  #: frozen by `runc pause`
    STOPPED = "stopped"  #: the init exited (recorded under the lock)
    DELETED = "deleted"  #: RemoveContainer released it; gone from the table


class Op(enum.Enum):
    """What can happen to a container (refusals name the states, not the op)."""

    START = enum.auto()  #: StartContainer
    PAUSE = enum.auto()  #: PauseContainer
    RESUME = enum.auto()  #: ResumeContainer
    UPDATE = enum.auto()  #: UpdateContainer
    EXEC = enum.auto()  #: ExecProcess
    EXIT = enum.auto()  #: the init process exited
    DELETE = enum.auto()  #: RemoveContainer, once the init is gone


_S = ContainerState

TRANSITIONS: dict[tuple[ContainerState, Op], ContainerState] = {
    (_S.CREATED, Op.START): _S.RUNNING,
    (_S.CREATED, Op.UPDATE): _S.CREATED,
    (_S.CREATED, Op.EXIT): _S.STOPPED,
    (_S.RUNNING, Op.PAUSE): _S.PAUSED,
    (_S.RUNNING, Op.UPDATE): _S.RUNNING,
    (_S.RUNNING, Op.EXEC): _S.RUNNING,
    (_S.RUNNING, Op.EXIT): _S.STOPPED,
    (_S.PAUSED, Op.RESUME): _S.RUNNING,
    (_S.PAUSED, Op.UPDATE): _S.PAUSED,
    (_S.PAUSED, Op.EXIT): _S.STOPPED,
    (_S.STOPPED, Op.DELETE): _S.DELETED,
}


def allowed_in(op: Op) -> list[ContainerState]:
    """The states in which `op` is allowed, in lifecycle order."""
    return [state for state in ContainerState if (state, op) in TRANSITIONS]


def transition(container_id: str, state: ContainerState, op: Op) -> ContainerState:
    """The state after `op`, or FailedPrecondition when `op` is not allowed in `state`."""
    try:
        return TRANSITIONS[(state, op)]
    except KeyError:
        wanted = "/".join(s.value for s in allowed_in(op))
        raise FailedPrecondition(
            f"container {container_id} is {state.value}, not {wanted}"
        ) from None
