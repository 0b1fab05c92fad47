"""Putting our shim in front of a private containerd, for tests, demos and benchmarks.

* `install_shim(bin_dir)`: `containerd-shim-kata-v2` in a directory on
  containerd's PATH — a symlink to the venv's console script when installed,
  else an equivalent launcher script (what pip would generate).
* `write_config(path, state_dir=...)`: a configuration.toml for the shim.
* `KataContainerd`: a PrivateContainerd whose environment (inherited by every
  shim it spawns) carries extra variables, e.g. KATA_CONF_FILE.
* `processes_matching(marker)`: live processes whose argv mentions `marker`
  (tests assert that none of theirs is left).
* `KataRig`: all of the above plus ids, specs and cleanup for one test.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from kata_shim import mounts
from kata_shim.devenv.containerd import PrivateContainerd
from kata_shim.devenv.specs import container_spec, shared_rootfs
from kata_shim.shim.paths import socket_address, socket_path

__all__ = [
    "RUNTIME",
    "SHIM_NAME",
    "KataContainerd",
    "KataRig",
    "console_script",
    "install_shim",
    "processes_matching",
    "write_config",
]

SHIM_NAME = "containerd-shim-kata-v2"
RUNTIME = "io.containerd.kata.v2"

_LAUNCHER = """\
#!{python}
# kata-shim launcher written by kata_shim.devenv.shim (same as pip's console script)
import sys
from kata_shim.shim.main import main
sys.exit(main())
"""


def console_script() -> Path | None:
    """The venv's installed console script, if `pip install` created one."""
    candidate = Path(sys.executable).parent / SHIM_NAME
    return candidate if os.access(candidate, os.X_OK) else None


def install_shim(bin_dir: Path, *, prefer_installed: bool = True) -> Path:
    """Make `bin_dir/containerd-shim-kata-v2` run this checkout's shim; return its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / SHIM_NAME
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    installed = console_script() if prefer_installed else None
    if installed is not None:
        target.symlink_to(installed)
    else:
        target.write_text(_LAUNCHER.format(python=sys.executable))
        target.chmod(0o755)
    return target


def write_config(
    path: Path,
    *,
    state_dir: Path,
    hypervisor: str = "local",
    hypervisor_keys: Mapping[str, str | Sequence[str]] | None = None,
    debug: bool = False,
    dial_timeout: int = 30,
    extra: str = "",
) -> Path:
    """A configuration.toml selecting `hypervisor` with sandboxes under `state_dir`."""
    flag = "true" if debug else "false"
    # strings and lists of strings: JSON's quoting is TOML's for these
    keys = "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in (hypervisor_keys or {}).items()
    )
    path.write_text(
        f"[hypervisor.{hypervisor}]\nenable_debug = {flag}\n{keys}\n"
        f"[agent.kata]\ndial_timeout = {dial_timeout}\n\n"
        f'[runtime]\nenable_debug = {flag}\nstate_dir = "{state_dir}"\n{extra}'
    )
    return path


@contextlib.contextmanager
def _environ(extra: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class KataContainerd(PrivateContainerd):
    """A private containerd started with extra environment variables (kept across restarts)."""

    def __init__(
        self, workdir: str | None = None, *, debug: bool = False, env: Mapping[str, str] = {}
    ) -> None:
        super().__init__(workdir, debug=debug)
        self.env = dict(env)

    def start(self, timeout: float = 15.0) -> None:
        with _environ(self.env):
            super().start(timeout)


def processes_matching(marker: str) -> list[tuple[int, str]]:
    """(pid, argv) of live, non-zombie processes whose argv contains `marker` (not us)."""
    found: list[tuple[int, str]] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        argv = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        if marker in argv:
            found.append((int(name), argv))
    return found


def scratch_setup(
    prefix: str, hypervisor: str, hypervisor_keys: Mapping[str, str] | None
) -> tuple[str, Path, Path]:
    """A unique marker, a scratch directory named after it, and a configuration.toml there
    (state in `<dir>/sbs`); shared by the containerd and the iSulad test rigs."""
    marker = f"{prefix}{os.getpid()}{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix=f"{marker}-", dir="/tmp"))
    config = write_config(
        work / "configuration.toml",
        state_dir=work / "sbs",
        hypervisor=hypervisor,
        hypervisor_keys=hypervisor_keys,
        dial_timeout=30 if hypervisor == "local" else 120,  # VMs boot slowly under TCG
    )
    return marker, work, config


class KataRig:
    """A private containerd with our shim on its PATH and a local-hypervisor configuration.

    Everything lives under one scratch directory whose name carries `marker`;
    task ids made by `id()` carry it too, so `leftovers()` finds every shim,
    agent and runc process a test started (containerd itself excluded).
    `close()` cleans up even after a failed test: tasks, containerd (by pid),
    leftover processes (by pid), shim sockets, mounts and the directory.
    """

    def __init__(
        self,
        *,
        debug: bool = False,
        hypervisor: str = "local",
        hypervisor_keys: Mapping[str, str] | None = None,
        prefix: str = "ks",
    ) -> None:
        self.marker, self.work, self.config = scratch_setup(prefix, hypervisor, hypervisor_keys)
        self.state_dir = self.work / "sbs"
        self.containerd = KataContainerd(
            str(self.work / "ctd"), env={"KATA_CONF_FILE": str(self.config)}, debug=debug
        )
        self.shim = install_shim(self.containerd.bin_dir)
        self.rootfs = shared_rootfs()
        self.ids: list[str] = []

    def id(self, name: str) -> str:
        task_id = f"{self.marker}-{name}"
        self.ids.append(task_id)
        return task_id

    def sh(self, script: str) -> list[str]:
        """`/bin/sh -c script` whose argv carries the marker (so leftovers() sees it)."""
        return ["/bin/sh", "-c", f"{script}; : {self.marker}"]

    def ctr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        return self.containerd.ctr(*args, check=False, timeout=timeout)

    def run_args(self, task_id: str, command: list[str], *flags: str) -> list[str]:
        """`ctr run` arguments for our runtime on the busybox rootfs (flags before positionals)."""
        fifo = str(self.containerd.fifo_dir)
        common = [
            "--runtime",
            RUNTIME,
            "--fifo-dir",
            fifo,
            "--rootfs",
            "--env",
            "PATH=/bin:/usr/bin",
        ]
        return ["run", *common, *flags, str(self.rootfs), task_id, *command]

    def spec_file(
        self,
        task_id: str,
        command: list[str],
        *,
        annotations: Mapping[str, str] | None = None,
        pid_namespace: bool = True,
    ) -> Path:
        """An OCI spec file for `ctr run --config` (annotations, optional host pid ns)."""
        spec = container_spec(command)
        spec["annotations"] = dict(annotations or {})
        if not pid_namespace:
            namespaces = spec["linux"]["namespaces"]
            spec["linux"]["namespaces"] = [n for n in namespaces if n["type"] != "pid"]
        path = self.work / f"{task_id}.json"
        path.write_text(json.dumps(spec))
        return path

    def run_spec_args(self, task_id: str, spec: Path, *flags: str) -> list[str]:
        fifo = str(self.containerd.fifo_dir)
        return [
            "run",
            "--runtime",
            RUNTIME,
            "--fifo-dir",
            fifo,
            "--config",
            str(spec),
            *flags,
            task_id,
        ]

    def leftovers(self) -> list[tuple[int, str]]:
        return [
            (pid, argv)
            for pid, argv in processes_matching(self.marker)
            if pid != self.containerd.pid
        ]

    def wait_clean(self, timeout: float = 10.0) -> list[tuple[int, str]]:
        """Wait (bounded) until no process of ours is left; return what is still there."""
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    def sockets(self) -> list[str]:
        found = []
        for task_id in self.ids:
            path = socket_path(socket_address(self.containerd.address, "default", task_id))
            if path and os.path.exists(path):
                found.append(path)
        return found

    def __enter__(self) -> KataRig:
        self.containerd.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remove_tasks(self) -> None:
        if self.containerd.pid is None:
            return
        for task_id in self.ids:
            self.ctr("task", "kill", "-s", "SIGKILL", task_id, timeout=10)
            self.ctr("task", "delete", "--force", task_id, timeout=10)
            self.ctr("container", "delete", task_id, timeout=10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._remove_tasks()
        self.containerd.stop()
        for pid, _ in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for path in self.sockets():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        mounts.unmount_all_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)
