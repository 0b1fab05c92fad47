"""OCI specs and a busybox rootfs for tests, benchmarks and demos.

`container_spec()` starts from `runc spec` (a real, complete OCI spec) and
points it at a shared busybox rootfs built once per machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kata_shim.devenv.containerd import busybox_rootfs

__all__ = ["container_spec", "shared_rootfs"]

_ROOTFS_CACHE = Path(tempfile.gettempdir()) / "kata-shim-test-busybox"


def shared_rootfs() -> Path:
    """A busybox rootfs built once per machine (use read-only).

    Built in a private sibling directory and renamed into place, so a concurrent
    test run never sees (or deletes) a half-built tree.
    """
    if (_ROOTFS_CACHE / "bin" / "sh").exists():
        return _ROOTFS_CACHE
    staging = Path(tempfile.mkdtemp(prefix=_ROOTFS_CACHE.name + ".", dir=_ROOTFS_CACHE.parent))
    try:
        busybox_rootfs(staging / "root")
        os.chmod(staging / "root", 0o755)
        try:
            (staging / "root").rename(_ROOTFS_CACHE)
        except OSError:  # another process won the race; use its tree
            if not (_ROOTFS_CACHE / "bin" / "sh").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _ROOTFS_CACHE


def container_spec(args: list[str], *, terminal: bool = False, memory: int = 0) -> dict[str, Any]:
    """A runc-generated OCI spec running `args` in the shared busybox rootfs (no netns)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["runc", "spec", "--bundle", tmp], check=True)
        spec: dict[str, Any] = json.loads((Path(tmp) / "config.json").read_text())
    spec["root"] = {"path": str(shared_rootfs()), "readonly": True}
    spec["process"]["args"] = args
    spec["process"]["terminal"] = terminal
    spec["process"]["env"] = ["PATH=/bin:/usr/bin", "TERM=xterm"]
    namespaces = spec["linux"]["namespaces"]
    spec["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "network"]
    if memory:
        spec["linux"]["resources"]["memory"] = {"limit": memory, "swap": memory}
    return spec
