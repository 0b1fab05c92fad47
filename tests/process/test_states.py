"""The transition table: allowed moves, the error for every forbidden one, invariants."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kata_shim import errors
from kata_shim.process.states import TRANSITIONS, Op, ProcessState, status_of, transition
from kata_shim.proto import task_types_pb2

pytestmark = pytest.mark.timeout(10)

S = ProcessState

# The lifecycle, spelled out once more by hand so a table edit is a conscious act.
EXPECTED_MOVES = {
    (S.CREATED, Op.START): S.RUNNING,
    (S.CREATED, Op.EXIT): S.STOPPED,
    (S.CREATED, Op.DELETE): S.DELETED,
    (S.RUNNING, Op.PAUSE): S.PAUSING,
    (S.RUNNING, Op.EXIT): S.STOPPED,
    (S.PAUSING, Op.PAUSED): S.PAUSED,
    (S.PAUSING, Op.UNPAUSE): S.RUNNING,
    (S.PAUSING, Op.EXIT): S.STOPPED,
    (S.PAUSED, Op.RESUME): S.RUNNING,
    (S.PAUSED, Op.EXIT): S.STOPPED,
    (S.STOPPED, Op.DELETE): S.DELETED,
}


def test_state_changing_moves_are_exactly_the_lifecycle() -> None:
    moves = {key: to for key, to in TRANSITIONS.items() if key[0] is not to}
    assert moves == EXPECTED_MOVES


@pytest.mark.parametrize(("state", "op"), list(itertools.product(ProcessState, Op)))
def test_every_pair_either_moves_or_fails_with_a_clear_message(state: S, op: Op) -> None:
    if (state, op) in TRANSITIONS:
        assert transition(state, op) is TRANSITIONS[(state, op)]
        return
    with pytest.raises(errors.FailedPrecondition) as info:
        transition(state, op)
    assert info.value.message == f"cannot {op.value} process in state {state.value}"


def test_messages_read_naturally() -> None:
    with pytest.raises(errors.FailedPrecondition, match=r"^cannot pause process in state created$"):
        transition(S.CREATED, Op.PAUSE)
    with pytest.raises(errors.FailedPrecondition, match=r"^cannot start process in state stopped$"):
        transition(S.STOPPED, Op.START)


def test_deleted_is_terminal_and_stopped_only_deletes() -> None:
    assert not [op for (state, op) in TRANSITIONS if state is S.DELETED]
    assert {op for (state, op) in TRANSITIONS if state is S.STOPPED} == {Op.DELETE, Op.CLOSE_IO}


def test_status_mapping() -> None:
    assert status_of(S.CREATED) == task_types_pb2.CREATED
    assert status_of(S.RUNNING) == task_types_pb2.RUNNING
    assert status_of(S.PAUSING) == task_types_pb2.PAUSING
    assert status_of(S.PAUSED) == task_types_pb2.PAUSED
    assert status_of(S.STOPPED) == task_types_pb2.STOPPED


@given(st.lists(st.sampled_from(list(Op)), max_size=30))
def test_random_op_sequences_follow_the_table(ops: list[Op]) -> None:
    state = S.CREATED
    exited = False
    for op in ops:
        try:
            new = transition(state, op)
        except errors.FailedPrecondition:
            assert (state, op) not in TRANSITIONS
            continue
        if new is S.STOPPED:
            exited = True
        if exited:
            assert new in (S.STOPPED, S.DELETED)  # no way back to life after an exit
        state = new
