"""Fixtures for the CRI tests: one CRI-enabled private containerd per module, in its own netns."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from kata_shim.devenv.cri import CNI_BIN_DIR, CriRig
from kata_shim.devenv.criclient import CriClient

REQUIRED = ("containerd", "ctr", "runc", "nsenter", "ip")


def check_tools() -> None:
    missing = [tool for tool in REQUIRED if shutil.which(tool) is None]
    missing += [
        str(CNI_BIN_DIR / p)
        for p in ("bridge", "host-local", "loopback")
        if not (CNI_BIN_DIR / p).exists()
    ]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run scripts/dev.sh setup")


@pytest.fixture(scope="module")
def cri_rig() -> Iterator[CriRig]:
    """A CRI rig without a guest image (handlers runc and kata-local)."""
    check_tools()
    with CriRig() as rig:
        yield rig


@pytest.fixture(scope="module")
def cri_client(cri_rig: CriRig) -> Iterator[CriClient]:
    with CriClient(cri_rig.cri_address) as client:
        yield client
