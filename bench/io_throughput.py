"""Container stdout → host FIFO throughput: our shim next to containerd-shim-runc-v2.

One private containerd serves both runtimes. Each round runs, interleaved,
`ctr run --rm … dd if=/dev/zero bs=1M count=N` once per runtime; ctr copies the
shim's stdout FIFO to a pipe we read here, so both paths pay the same ctr hop.
Throughput is N MiB over the time from the first byte to EOF (start-up costs
excluded; `ctr run` wall time is reported separately). The VM sandbox (QEMU,
TCG on this host) is measured on its own with a smaller N (`--vm`).
Prints one JSON object: per runtime the median/best MB/s (1 MB = 10^6 bytes) and
the ours/runc ratio of medians.

Run: `.venv/bin/python bench/io_throughput.py [--mib 512] [--rounds 5] [--vm] [--vm-mib 64]`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from kata_shim.devenv.shim import KataRig

RUNC = "io.containerd.runc.v2"
KATA = "io.containerd.kata.v2"
READ_SIZE = 1 << 20


def _dd(mib: int) -> list[str]:
    return ["/bin/dd", "if=/dev/zero", "bs=1048576", f"count={mib}"]


def one_run(rig: KataRig, runtime: str, name: str, mib: int) -> dict[str, float]:
    """Run dd in a container through `runtime`; time the stdout stream as ctr delivers it."""
    task_id = rig.id(name)
    args = rig.run_args(task_id, _dd(mib), "--rm")
    args[args.index(KATA)] = runtime
    cmd = ["ctr", "--address", rig.containerd.address, *args]
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd, total, first = proc.stdout.fileno(), 0, 0.0
    buf = bytearray(READ_SIZE)
    while got := os.readv(fd, [buf]):
        if not total:
            first = time.monotonic()
        total += got
    ended = time.monotonic()
    if proc.wait(60) != 0 or total != mib << 20:
        raise RuntimeError(f"{runtime}: ctr exited {proc.returncode} after {total} bytes")
    return {"MBps": total / (ended - first) / 1e6, "wall_s": ended - began}


def summarize(samples: list[dict[str, float]]) -> dict[str, float]:
    rates = [s["MBps"] for s in samples]
    return {
        "median_MBps": round(statistics.median(rates)),
        "best_MBps": round(max(rates)),
        "median_wall_s": round(statistics.median(s["wall_s"] for s in samples), 3),
        "runs": len(samples),
    }


def local_vs_runc(mib: int, rounds: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {KATA: [], RUNC: []}
    with KataRig() as rig:
        for runtime in (KATA, RUNC):  # warm-up: page cache, binaries
            one_run(rig, runtime, f"warm-{runtime.split('.')[-2]}", 8)
        for i in range(rounds):
            order = (KATA, RUNC) if i % 2 == 0 else (RUNC, KATA)
            for runtime in order:
                samples[runtime].append(one_run(rig, runtime, f"{runtime.split('.')[-2]}{i}", mib))
    ours, runc = summarize(samples[KATA]), summarize(samples[RUNC])
    return {
        "mib_per_run": mib,
        "kata_local": ours,
        "runc_v2": runc,
        "ratio_ours_over_runc": round(ours["median_MBps"] / runc["median_MBps"], 3),
    }


def vm(mib: int, rounds: int, image: Path) -> dict[str, Any]:
    keys = {
        "kernel": str(image / "vmlinux"),
        "initrd": str(image / "kata-shim-initrd.img"),
        "accel": "auto",
    }
    samples = []
    with KataRig(hypervisor="qemu", hypervisor_keys=keys) as rig:
        for i in range(rounds):
            samples.append(one_run(rig, KATA, f"vm{i}", mib))
    return {"mib_per_run": mib, "kata_qemu_tcg": summarize(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB per local run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vm", action="store_true", help="also measure the VM sandbox (TCG)")
    parser.add_argument("--vm-mib", type=int, default=64)
    parser.add_argument("--vm-rounds", type=int, default=3)
    parser.add_argument("--image", type=Path, default=Path("/tmp/kata-shim-test-image"))
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "io_throughput",
        "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "local": local_vs_runc(args.mib, args.rounds),
    }
    if args.vm:
        from kata_shim.image.builder import build

        build(args.image)
        report["vm"] = vm(args.vm_mib, args.vm_rounds, args.image)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
