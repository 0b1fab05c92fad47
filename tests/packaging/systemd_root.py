"""A scratch root for `systemd-analyze verify --root`: host units + stub binaries.

`systemd-analyze verify` (no PID 1 needed) resolves dependencies such as
sysinit.target and checks that every Exec*= binary exists, all inside
`--root`. So the root gets a copy of the host's /lib/systemd/system (1 MB),
empty executable stubs for binaries that are not ours, and an isulad.service
like openEuler's (iSulad is not packaged for Debian).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

HOST_UNITS = Path("/lib/systemd/system")
UNIT_DIR = "usr/lib/systemd/system"
ISULAD_UNIT = """[Unit]
Description=iSulad Application Container Engine
After=network.target

[Service]
Type=notify
EnvironmentFile=-/etc/sysconfig/iSulad
ExecStart=/usr/bin/isulad $OPTIONS
Delegate=yes
KillMode=process
Restart=on-failure
TimeoutStopSec=10

[Install]
WantedBy=multi-user.target
"""


def stub(root: Path, binary: str) -> None:
    path = root / binary.lstrip("/")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)


def prepare(root: Path) -> Path:
    """Fill `root` with the host's units, isulad.service and engine stubs; return its unit dir."""
    units = root / UNIT_DIR
    units.mkdir(parents=True, exist_ok=True)
    for unit in HOST_UNITS.iterdir():
        target = units / unit.name
        if not target.exists() and not target.is_symlink():
            if unit.is_dir() and not unit.is_symlink():
                shutil.copytree(unit, target, symlinks=True)
            else:
                shutil.copy2(unit, target, follow_symlinks=False)
    (units / "isulad.service").write_text(ISULAD_UNIT)
    for binary in ("/usr/bin/containerd", "/sbin/modprobe", "/usr/bin/isulad"):
        stub(root, binary)
    return units


def install_dropin(root: Path, service: str, source: Path) -> Path:
    target = root / "etc/systemd/system" / f"{service}.d" / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return target


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify --root=<root> <units>`; output merged into stdout."""
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *units],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


def exposure(root: Path, unit: str) -> float:
    """`systemd-analyze security --offline` exposure score (0 = locked down, 10 = exposed)."""
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", unit],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match[1])
