"""containerd's identifier rule (kata_shim.ids)."""

from __future__ import annotations

import pytest

from kata_shim.ids import MAX_LENGTH, identifier_problem


@pytest.mark.parametrize(
    "value",
    ["a", "c1", "ks123abc-hello", "k8s.io", "a_b", "A.b-c_d9", "f" * 64, "x" * MAX_LENGTH],
)
def test_valid_identifiers(value: str) -> None:
    assert identifier_problem(value) is None


@pytest.mark.parametrize(
    "value",
    ["", ".", "..", "../x", "a/b", "/abs", "-a", "a-", "a..b", "a b", "é", "a\0b", "x" * 200],
)
def test_invalid_identifiers(value: str) -> None:
    assert identifier_problem(value)
