"""An emulated iSulad host for one test: our shim on PATH, a configuration, cleanup by marker.

Everything lives under one scratch directory whose name carries `marker`; ids
made by `id()` and the commands made by `sh()` carry it too, so `leftovers()`
finds every shim, agent, runc and container process the test started.
`close()` cleans up even after a failure: processes (by pid), shim sockets,
mounts, the directory. The environment is what iSulad's would be: PATH with
the shim, KATA_CONF_FILE, and no TTRPC_ADDRESS (Isulad adds EXIT_FIFO_DIR).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kata_shim import mounts
from kata_shim.devenv.shim import install_shim, processes_matching, scratch_setup
from kata_shim.devenv.specs import container_spec
from kata_shim.shim.paths import socket_address, socket_path
from tests.isulad.isulad import Isulad

__all__ = ["IsuladRig"]

DOCKER_TYPE = "io.kubernetes.docker.type"
DOCKER_SANDBOX = "io.kubernetes.sandbox.id"
CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"


class IsuladRig:
    def __init__(
        self,
        *,
        hypervisor: str = "local",
        hypervisor_keys: Mapping[str, str] | None = None,
        wait_monitor: bool = True,
    ) -> None:
        self.marker, self.work, self.config = scratch_setup("is", hypervisor, hypervisor_keys)
        self.state_dir = self.work / "sbs"
        self.bin_dir = self.work / "bin"
        install_shim(self.bin_dir)
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
        env["KATA_CONF_FILE"] = str(self.config)
        self.env = env
        self.isulad = self.new_isulad(wait_monitor=wait_monitor)
        self.ids: list[str] = []

    def new_isulad(self, *, wait_monitor: bool = True) -> Isulad:
        """An iSulad 'process' on this host (after a restart: a fresh one, same directories)."""
        return Isulad(self.work / "isulad", self.env, wait_monitor=wait_monitor)

    def id(self, name: str) -> str:
        task_id = f"{self.marker}-{name}"
        self.ids.append(task_id)
        return task_id

    def sh(self, script: str) -> list[str]:
        return ["/bin/sh", "-c", f"{script}; : {self.marker}"]

    def spec(self, script: str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        spec = container_spec(self.sh(script))
        spec["annotations"] = dict(annotations or {})
        return spec

    # observation ---------------------------------------------------------------------------
    def leftovers(self) -> list[tuple[int, str]]:
        return processes_matching(self.marker)

    def shims(self) -> list[tuple[int, str]]:
        return [(pid, argv) for pid, argv in self.leftovers() if "containerd-shim-kata-v2" in argv]

    def wait_clean(self, timeout: float = 15.0) -> list[tuple[int, str]]:
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def socket(self, task_id: str) -> str:
        path = socket_path(socket_address("", "isula", task_id))
        assert path is not None
        return path

    def sockets(self) -> list[str]:
        return [self.socket(i) for i in self.ids if os.path.exists(self.socket(i))]

    def mounts(self) -> list[str]:
        text = Path("/proc/self/mountinfo").read_text()
        return [line for line in text.splitlines() if self.marker in line]

    def assert_clean(self) -> None:
        left = self.wait_clean()
        assert not left, f"processes left behind: {left}"
        assert not self.sockets(), f"shim sockets left behind: {self.sockets()}"
        assert not self.mounts(), f"mounts left behind: {self.mounts()}"
        sandboxes = list(self.state_dir.iterdir()) if self.state_dir.exists() else []
        assert not sandboxes, f"sandbox state left behind: {sandboxes}"

    # cleanup -------------------------------------------------------------------------------
    def __enter__(self) -> IsuladRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.isulad.close()
        for pid, _ in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for path in self.sockets():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        mounts.unmount_all_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)
