"""Fixtures for the reliability suite: a KataRig per test plus a before/after leak check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kata_shim.devenv.shim import KataRig
from tests.reliability.leaks import Inventory


@pytest.fixture
def rig() -> Iterator[KataRig]:
    with KataRig() as rig:
        yield rig


@pytest.fixture
def before(rig: KataRig) -> Inventory:
    """What exists before the test's first task (compare with leaks() at the end)."""
    return Inventory.take(rig)
