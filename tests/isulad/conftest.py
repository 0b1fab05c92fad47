"""Fixtures for the iSulad emulation tests: an IsuladRig per test, cleaned up by pid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.isulad.rig import IsuladRig


@pytest.fixture
def rig() -> Iterator[IsuladRig]:
    with IsuladRig() as rig:
        yield rig
