"""A private busybox rootfs and OCI specs for agent tests.

Unlike kata_shim.devenv.specs.shared_rootfs (one tree per machine, rebuilt in
place when incomplete — a test run of someone else can remove it under our
feet), `private_rootfs()` is built once per test process in its own temporary
directory and removed at exit. `oci_spec()` is a `runc spec` spec running
`args` in it, without a network namespace.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kata_shim.devenv.containerd import busybox_rootfs

__all__ = ["oci_spec", "private_rootfs"]

_ROOTFS: Path | None = None
_BASE_SPEC: dict[str, Any] | None = None


def private_rootfs() -> Path:
    global _ROOTFS
    if _ROOTFS is None:
        parent = Path(tempfile.mkdtemp(prefix="ks-rootfs-", dir="/tmp"))
        atexit.register(shutil.rmtree, parent, True)
        _ROOTFS = busybox_rootfs(parent / "rootfs")
    return _ROOTFS


def _base_spec() -> dict[str, Any]:
    global _BASE_SPEC
    if _BASE_SPEC is None:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["runc", "spec", "--bundle", tmp], check=True)
            _BASE_SPEC = json.loads((Path(tmp) / "config.json").read_text())
    return json.loads(json.dumps(_BASE_SPEC))  # a deep copy


def oci_spec(
    args: list[str], *, terminal: bool = False, memory: int = 0, pid_ns: bool = True
) -> dict[str, Any]:
    spec = _base_spec()
    spec["root"] = {"path": str(private_rootfs()), "readonly": True}
    spec["process"]["args"] = args
    spec["process"]["terminal"] = terminal
    spec["process"]["env"] = ["PATH=/bin:/usr/bin", "TERM=xterm"]
    dropped = {"network"} | (set() if pid_ns else {"pid"})
    spec["linux"]["namespaces"] = [
        n for n in spec["linux"]["namespaces"] if n["type"] not in dropped
    ]
    if memory:
        spec["linux"]["resources"]["memory"] = {"limit": memory, "swap": memory}
    return spec
