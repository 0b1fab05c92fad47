"""Boot the guest image once under QEMU to run a built-in self-test (tests, demos).

Uses the same direct-boot flags the QEMU backend uses for speed: microvm, the
PVH vmlinux and `tsc_early_khz` (a TCG microvm guest hangs calibrating its TSC
without it). No network, no vsock device: the guest's vsock loopback stays
inside the guest. QEMU is started directly and killed by PID on timeout.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from kata_shim.sandbox.qemu.accel import host_tsc_khz

__all__ = ["run_selftest"]


def run_selftest(image_dir: Path, name: str, timeout: float = 120.0) -> tuple[int, str]:
    """Boot the image with `kata_shim.run=<name>`; return (guest rc, guest output line)."""
    vmlinux = image_dir / "vmlinux"
    append = (
        f"console=ttyS0 quiet panic=-1 tsc_early_khz={host_tsc_khz()} "
        f"kata_shim.selftest=1 kata_shim.run={name}"
    )
    cmd = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-M",
        "microvm",
        "-m",
        "512",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
        "-kernel",
        str(vmlinux),
        "-initrd",
        str(image_dir / "kata-shim-initrd.img"),
        "-append",
        append,
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    text = output.decode(errors="replace")
    match = re.search(r"KATA_SHIM_RESULT rc=(\d+) (.*)", text)
    if match is None:
        return -1, text[-2000:]
    return int(match.group(1)), match.group(2).strip()
