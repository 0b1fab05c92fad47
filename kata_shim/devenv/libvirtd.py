"""Start libvirtd + virtlogd by hand (no systemd here) for tests and demos; stop them by PID.

If a libvirtd already answers on qemu:///system it is used and left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["LibvirtDaemons"]

SOCKET = Path("/run/libvirt/libvirt-sock")


def _answers() -> bool:
    if not SOCKET.exists():
        return False
    result = subprocess.run(
        ["virsh", "-c", "qemu:///system", "uri"], capture_output=True, timeout=30
    )
    return result.returncode == 0


class LibvirtDaemons:
    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="kslibvirt-"))
        self.started: list[int] = []

    def start(self, timeout: float = 30.0) -> None:
        if _answers():
            return
        for name in ("virtlogd", "libvirtd"):
            pid_file = self.work / f"{name}.pid"
            env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{self.work}/{name}.log")
            subprocess.run([name, "-d", "-p", str(pid_file)], env=env, check=True)
            deadline = time.monotonic() + 10
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.started.append(int(pid_file.read_text()))
        deadline = time.monotonic() + timeout
        while not _answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not come up; see {self.work}/libvirtd.log")
            time.sleep(0.1)

    def stop(self) -> None:
        for pid in reversed(self.started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)
        self.started.clear()
