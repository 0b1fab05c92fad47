"""The agent's container state table: every allowed transition, refusals and their errors."""

from __future__ import annotations

import pytest

from kata_shim import errors
from kata_shim.guest.states import TRANSITIONS, ContainerState, Op, allowed_in, transition

S = ContainerState

ALLOWED = [
    (S.CREATED, Op.START, S.RUNNING),
    (S.CREATED, Op.UPDATE, S.CREATED),
    (S.CREATED, Op.EXIT, S.STOPPED),
    (S.RUNNING, Op.PAUSE, S.PAUSED),
    (S.RUNNING, Op.UPDATE, S.RUNNING),
    (S.RUNNING, Op.EXEC, S.RUNNING),
    (S.RUNNING, Op.EXIT, S.STOPPED),
    (S.PAUSED, Op.RESUME, S.RUNNING),
    (S.PAUSED, Op.UPDATE, S.PAUSED),
    (S.PAUSED, Op.EXIT, S.STOPPED),
    (S.STOPPED, Op.DELETE, S.DELETED),
]


def test_the_table_is_exactly_the_allowed_list() -> None:
    assert {(state, op): after for state, op, after in ALLOWED} == TRANSITIONS


@pytest.mark.parametrize(("state", "op", "after"), ALLOWED)
def test_allowed_transition(state: ContainerState, op: Op, after: ContainerState) -> None:
    assert transition("c1", state, op) is after


# (state, op, the message the agent has always sent for it)
REFUSED = [
    (S.RUNNING, Op.START, "container c1 is running, not created"),
    (S.STOPPED, Op.START, "container c1 is stopped, not created"),
    (S.CREATED, Op.PAUSE, "container c1 is created, not running"),
    (S.PAUSED, Op.PAUSE, "container c1 is paused, not running"),
    (S.RUNNING, Op.RESUME, "container c1 is running, not paused"),
    (S.CREATED, Op.EXEC, "container c1 is created, not running"),
    (S.PAUSED, Op.EXEC, "container c1 is paused, not running"),
    (S.STOPPED, Op.EXEC, "container c1 is stopped, not running"),
    (S.STOPPED, Op.UPDATE, "container c1 is stopped, not created/running/paused"),
    (S.STOPPED, Op.EXIT, "container c1 is stopped, not created/running/paused"),
    (S.RUNNING, Op.DELETE, "container c1 is running, not stopped"),
    (S.DELETED, Op.DELETE, "container c1 is deleted, not stopped"),
]


@pytest.mark.parametrize(("state", "op", "message"), REFUSED)
def test_refused_transition_is_failed_precondition(
    state: ContainerState, op: Op, message: str
) -> None:
    with pytest.raises(errors.FailedPrecondition) as caught:
        transition("c1", state, op)
    assert caught.value.message == message
    assert caught.value.code is errors.Code.FAILED_PRECONDITION


def test_nothing_leaves_deleted() -> None:
    assert [op for op in Op if (S.DELETED, op) in TRANSITIONS] == []


def test_allowed_in_lists_states_in_lifecycle_order() -> None:
    assert allowed_in(Op.UPDATE) == [S.CREATED, S.RUNNING, S.PAUSED]
    assert allowed_in(Op.EXIT) == [S.CREATED, S.RUNNING, S.PAUSED]
    assert allowed_in(Op.START) == [S.CREATED]
