"""What bounds a VM pod's create → first output under TCG: the guest's own stages.

Boots the sandbox's QEMU command line (same flags, the default `image` design
and the previous `initrd` one) with `kata_shim.run=bounds`; the guest's /init
(image/init.sh) reads its uptime at each stage, so the host's load does not
enter the split:
  kernel_to_init_s          guest uptime when /init starts
  init_to_selftest_s        /init's mounts, modules and share until the test runs
  python_start_cold_s/_warm_s        `python3 -c pass`, first and second run
  agent_import_cold_s/_warm_s        `python3 -c 'import kata_shim.guest.main'`
  agent_import_top          the largest cumulative imports (-X importtime, µs)
  guest_kernel_memory       the guest kernel's boot line on its own size in guest RAM
  host_wall_s               host wall time QEMU start → result line
Medians over --runs. Prints JSON.
Run: `.venv/bin/python bench/vm_bounds.py [--image DIR] [--runs 3] [--designs image,initrd]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vm_boot import boot_selftest

from kata_shim.image.builder import build
from kata_shim.sandbox.qemu.accel import choose_accel
from kata_shim.sandbox.qemu.cmdline import QemuConfig

_RESULT = re.compile(rb"KATA_SHIM_RESULT rc=0 t ([\d. ]+) top (.*) mem (.*)\r?\n")
STAGES = (
    "kernel_to_init_s",
    "init_to_selftest_s",
    "python_start_cold_s",
    "python_start_warm_s",
    "agent_import_cold_s",
    "agent_import_warm_s",
)


def parse(console: bytes) -> tuple[dict[str, float], list[str], str]:
    found = _RESULT.search(console)
    if found is None:
        raise RuntimeError(f"no bounds result on the console: {console[-500:]!r}")
    init, *marks = (float(v) for v in found.group(1).split())
    points = [init, *marks]
    stages = [init] + [b - a for a, b in itertools.pairwise(points)]
    top = [t.strip() for t in found.group(2).decode(errors="replace").split(";") if t.strip()]
    memory = found.group(3).decode(errors="replace").strip()
    return dict(zip(STAGES, (round(s, 2) for s in stages), strict=True)), top, memory


def design_table(image: Path, design: str) -> dict[str, Any]:
    table: dict[str, Any] = {"kernel": str(image / "vmlinux")}
    if design == "image":
        return table | {"image": str(image / "kata-shim-rootfs.img"), "initrd": ""}
    return table | {"initrd": str(image / "kata-shim-initrd.img"), "image": ""}


def run_design(image: Path, design: str, runs: int) -> dict[str, Any]:
    config = QemuConfig.from_table(design_table(image, design))
    samples = []
    top: list[str] = []
    memory = ""
    for _ in range(runs):
        wall, console = boot_selftest(config, "bounds", _RESULT)
        stages, top, memory = parse(console)
        samples.append(stages | {"host_wall_s": round(wall, 2)})
    report: dict[str, Any] = {
        key: round(statistics.median(s[key] for s in samples), 2) for key in samples[0]
    }
    extra = {"agent_import_top": top, "guest_kernel_memory": memory}
    return report | extra | {"accel": choose_accel(config.accel)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", type=Path, default=Path("/tmp/kata-shim-test-image"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--designs", default="image,initrd")
    args = parser.parse_args()
    build(args.image, progress=lambda m: None)
    report = {d: run_design(args.image, d, args.runs) for d in args.designs.split(",")}
    print(json.dumps({"benchmark": "vm_bounds", "runs": args.runs} | report))


if __name__ == "__main__":
    main()
