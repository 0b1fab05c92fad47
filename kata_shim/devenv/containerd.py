"""A private containerd instance for the demo, the benchmarks and the integration tests.

Owns one containerd process started with its own root, state and sockets under a
scratch directory (CRI disabled), started detached with no inherited fds, and
stopped by its PID. Nothing here touches the host's /var/lib/containerd or
/run/containerd/containerd.sock. Paths are kept short: unix socket paths must
stay under 108 bytes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ContainerdError", "PrivateContainerd", "busybox_rootfs"]

_CONFIG = """\
# Private containerd config written by kata-shim's devenv: nothing outside {work}.
version = 2
root = "{work}/root"
state = "{work}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{work}/containerd.sock"

[ttrpc]
  address = "{work}/containerd.sock.ttrpc"

[debug]
  address = "{work}/debug.sock"
  level = "{level}"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{work}/opt"
"""


class ContainerdError(RuntimeError):
    """containerd did not start, or a ctr command failed."""


class PrivateContainerd:
    """Start, drive (through `ctr`) and stop one private containerd."""

    def __init__(self, workdir: str | None = None, *, debug: bool = False) -> None:
        self.work = Path(workdir or tempfile.mkdtemp(prefix="ksctd-", dir="/tmp"))
        self.debug = debug
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return str(self.work / "containerd.sock")

    @property
    def ttrpc_address(self) -> str:
        return str(self.work / "containerd.sock.ttrpc")

    @property
    def bin_dir(self) -> Path:
        """containerd prepends this to its PATH: shims placed here are found by name."""
        return self.work / "opt" / "bin"

    @property
    def fifo_dir(self) -> Path:
        return self.work / "fifo"

    @property
    def log_path(self) -> Path:
        return self.work / "containerd.log"

    def write_config(self) -> Path:
        for sub in ("opt/bin", "fifo", "root", "state"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        config = self.work / "config.toml"
        config.write_text(self.config_text())
        return config

    def config_text(self) -> str:
        """The config.toml contents (subclasses extend it, e.g. with the CRI plugin)."""
        level = "debug" if self.debug else "info"
        return _CONFIG.format(work=self.work, level=level)

    def command(self, config: Path) -> list[str]:
        """The argv that runs containerd (subclasses may wrap it, e.g. in nsenter)."""
        return ["containerd", "--config", str(config)]

    def start(self, timeout: float = 15.0) -> None:
        """Start containerd detached and wait until `ctr version` answers."""
        config = self.write_config()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
                start_new_session=True,
            )
        self.pid = self._proc.pid
        (self.work / "containerd.pid").write_text(str(self.pid))
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ContainerdError(f"containerd exited early; log:\n{self.log_tail()}")
            if os.path.exists(self.address) and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise ContainerdError(f"containerd not ready after {timeout}s; log:\n{self.log_tail()}")

    def ctr(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60.0,
        input: bytes | None = None,
        namespace: str = "default",
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `ctr --address <ours> -n <namespace> ARGS...` and return the result."""
        cmd = ["ctr", "--address", self.address, "-n", namespace, *args]
        result = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise ContainerdError(
                f"{' '.join(cmd)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result

    def popen_ctr(self, *args: str, namespace: str = "default") -> subprocess.Popen[bytes]:
        """Start a long-running ctr command (e.g. `events`) with piped stdout."""
        cmd = ["ctr", "--address", self.address, "-n", namespace, *args]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our containerd (by PID), SIGKILL it if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        self.pid = None

    def __enter__(self) -> PrivateContainerd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def busybox_rootfs(target: str | os.PathLike[str], busybox: str = "/bin/busybox") -> Path:
    """Build a busybox rootfs (static busybox + applet symlinks) at `target`."""
    root = Path(target)
    for sub in ("bin", "proc", "sys", "dev", "tmp", "etc", "run", "usr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    dest = root / "bin" / "busybox"
    dest.write_bytes(Path(busybox).read_bytes())
    dest.chmod(0o755)
    applets: Sequence[str] = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    for name, target_name in (("usr/bin", "../bin"), ("sbin", "bin")):
        link = root / name
        if not link.is_symlink():
            link.symlink_to(target_name)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root
