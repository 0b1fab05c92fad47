"""Fixtures for tests that drive a real, private containerd 1.6 (started and stopped by PID)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from kata_shim.devenv.containerd import PrivateContainerd


@pytest.fixture
def containerd() -> Iterator[PrivateContainerd]:
    """A fresh private containerd for one test; stopped and its scratch dir removed after."""
    missing = [b for b in ("containerd", "ctr", "runc") if shutil.which(b) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/dev.sh setup")
    ctd = PrivateContainerd()
    try:
        ctd.start()
        yield ctd
    finally:
        ctd.stop()
        shutil.rmtree(ctd.work, ignore_errors=True)
