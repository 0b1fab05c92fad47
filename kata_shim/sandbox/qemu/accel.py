"""Choosing QEMU's accelerator: `kvm`, `tcg`, or `auto`.

`auto` uses KVM only when it can really run a stock guest: /dev/kvm must be
usable and the host must not be a PVM host (kvm_pvm: a nested paravirtual
KVM that needs PVM-enabled guest kernels; stock kernels fault or crawl there).
Otherwise it falls back to TCG with a logged warning. Under TCG a microvm
guest needs the host's TSC frequency (`host_tsc_khz`) on its command line.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from kata_shim.errors import InvalidArgument

__all__ = ["choose_accel", "host_tsc_khz", "kvm_unusable_reason"]

log = logging.getLogger(__name__)


def kvm_unusable_reason(
    dev: Path = Path("/dev/kvm"), sys_module: Path = Path("/sys/module")
) -> str | None:
    """Why KVM cannot run a stock guest here, or None when it can."""
    if not dev.exists():
        return f"{dev} does not exist"
    if not os.access(dev, os.R_OK | os.W_OK):
        return f"{dev} is not accessible"
    if (sys_module / "kvm_pvm").exists():
        return "the host is a PVM host (kvm_pvm): stock guest kernels cannot run under its KVM"
    return None


def choose_accel(
    wanted: str, dev: Path = Path("/dev/kvm"), sys_module: Path = Path("/sys/module")
) -> str:
    """The accelerator to pass to `-accel` for config value `wanted`."""
    if wanted not in ("auto", "kvm", "tcg"):
        raise InvalidArgument(f"accel must be auto, kvm or tcg, not {wanted!r}")
    if wanted != "auto":
        return wanted
    reason = kvm_unusable_reason(dev, sys_module)
    if reason is None:
        return "kvm"
    log.warning("accel=auto: not using KVM (%s); falling back to TCG software emulation", reason)
    return "tcg"


def host_tsc_khz(cpuinfo: str | None = None) -> int:
    """The host CPU frequency in kHz from /proc/cpuinfo (what the TCG guest should assume)."""
    text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    match = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)
    return int(float(match.group(1)) * 1000) if match else 2_000_000
