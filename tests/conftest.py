"""Session-wide fixtures shared by several test packages."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Built once per machine and reused: the builder rebuilds only when its inputs change.
# KATA_SHIM_TEST_IMAGE_DIR gives a work tree its own copy (parallel trees with different
# builders would otherwise rebuild one shared directory under each other).
TEST_IMAGE_DIR = Path(os.environ.get("KATA_SHIM_TEST_IMAGE_DIR", "/tmp/kata-shim-test-image"))


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The guest kernel + initramfs built by kata_shim.image (QEMU and kernel required)."""
    missing = [tool for tool in ("qemu-system-x86_64", "modprobe") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/dev.sh setup")
    from kata_shim.image.builder import build

    build(TEST_IMAGE_DIR)
    return TEST_IMAGE_DIR


@pytest.fixture(autouse=True)
def _no_stray_global_event_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close an idle event loop left installed as the thread's current loop.

    pytest-asyncio leaves one behind after its tests; a later plain test's
    asyncio.run() would drop it unclosed and the ResourceWarning would surface,
    at garbage collection, inside some unrelated test.
    """
    if request.node.get_closest_marker("asyncio") is None:
        local = getattr(asyncio.get_event_loop_policy(), "_local", None)
        loop = getattr(local, "_loop", None)
        if loop is not None and not loop.is_running() and not loop.is_closed():
            loop.close()
            asyncio.set_event_loop(None)
    yield
