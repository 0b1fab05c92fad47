"""Fixtures for running the real shim binary: a launcher, scratch bundles, and a reaper.

Every daemon a test starts is recorded with `Reaper.track` and stopped by pid at
teardown (SIGTERM, then SIGKILL), and every socket it may have left is removed,
even when the test fails.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from kata_shim.devenv.shim import install_shim
from kata_shim.shim.paths import socket_address, socket_path

_COUNTER = itertools.count()
NAMESPACE = "kstest"


def unique_id(prefix: str = "kst") -> str:
    return f"{prefix}{os.getpid()}n{next(_COUNTER)}"


def make_bundle(root: Path, task_id: str, annotations: Mapping[str, str] | None = None) -> Path:
    bundle = root / task_id
    (bundle / "rootfs").mkdir(parents=True)
    spec = {
        "ociVersion": "1.0.2",
        "process": {"args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin"]},
        "root": {"path": "rootfs"},
        "annotations": dict(annotations or {}),
    }
    (bundle / "config.json").write_text(json.dumps(spec))
    (bundle / "log").touch()  # a regular file, as iSulad creates it
    return bundle


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Reaper:
    """Stops tracked daemons and removes tracked sockets."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.sockets: list[str] = []

    def track(self, pid: int | None = None, address: str | None = None) -> None:
        if pid:
            self.pids.append(pid)
        if address:
            path = socket_path(address)
            if path:
                self.sockets.append(path)

    def track_task(self, task_id: str, address: str = "", namespace: str = NAMESPACE) -> None:
        self.track(address=socket_address(address, namespace, task_id))

    def cleanup(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in self.pids:
            if not wait_dead(pid, 3.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_dead(pid, 2.0)
        for path in self.sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    reaper = Reaper()
    try:
        yield reaper
    finally:
        reaper.cleanup()


@pytest.fixture(scope="session")
def shim_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `containerd-shim-kata-v2` launcher for this checkout (what pip would install)."""
    return install_shim(tmp_path_factory.mktemp("bin"), prefer_installed=False)


def run_shim(
    shim: Path,
    args: list[str],
    cwd: Path,
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    combined: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run the shim like containerd does (stdout+stderr combined unless `combined=False`)."""
    return subprocess.run(
        [str(shim), *args],
        cwd=cwd,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if combined else subprocess.PIPE,
        env=dict(env) if env is not None else None,
        timeout=30,
    )
