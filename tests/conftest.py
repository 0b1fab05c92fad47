"""Session-wide fixtures shared by several test packages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Built once per machine and reused: the builder rebuilds only when its inputs change.
TEST_IMAGE_DIR = Path("/tmp/kata-shim-test-image")


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The guest kernel + initramfs built by kata_shim.image (QEMU and kernel required)."""
    missing = [tool for tool in ("qemu-system-x86_64", "modprobe") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/dev.sh setup")
    from kata_shim.image.builder import build

    build(TEST_IMAGE_DIR)
    return TEST_IMAGE_DIR
