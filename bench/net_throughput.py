"""Pod → host TCP throughput (issue 15): runc-v2, our local sandbox and our VM sandbox.

A "host" network namespace of the benchmark's own (kata_shim.devenv.cni, prefix
`netbench-`) holds a CNI bridge; one pod netns is attached to it. Each run starts a
container in that pod netns (`ctr run --with-ns network:<path>`) that streams N MiB
with busybox: `dd if=/dev/zero bs=1M count=N | nc <gateway> <port>`. A receiver socket,
made inside the host netns on the bridge's gateway address, reads it here and closes
when N MiB arrived. Throughput is N MiB over first byte → last byte (container start-up
excluded; `ctr run` wall time is reported too). runc and the local sandbox alternate
in each round; the VM (QEMU, TCG on this host: tap + tc redirect + userspace
virtio-net) runs on its own rig. No traffic leaves the benchmark's namespaces.

Prints one JSON object: per runtime median/best MB/s (1 MB = 10^6 bytes), the ratios
local/runc and vm/runc and vm/local of the medians.

Run: `.venv/bin/python bench/net_throughput.py [--mib 256] [--rounds 3] [--vm-rounds 1]
[--image DIR] [--no-vm]`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from kata_shim.devenv.cni import CniHost
from kata_shim.devenv.shim import KataRig
from kata_shim.network.netns import run_in_netns

RUNC = "io.containerd.runc.v2"
KATA = "io.containerd.kata.v2"
READ_SIZE = 1 << 20
RUN_TIMEOUT = 900.0  # 256 MiB through a TCG guest's userspace virtio-net


class Receiver:
    """One TCP connection read to `expected` bytes in a thread; first/last byte times."""

    def __init__(self, host: CniHost, address: str, expected: int) -> None:
        self.expected = expected
        self.server = run_in_netns(host.netns, lambda: socket.create_server((address, 0)))
        self.port = self.server.getsockname()[1]
        self.total, self.first, self.last = 0, 0.0, 0.0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.server.settimeout(RUN_TIMEOUT)
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(RUN_TIMEOUT)
            buf = bytearray(READ_SIZE)
            while self.total < self.expected and (got := conn.recv_into(buf)):
                if not self.total:
                    self.first = time.monotonic()
                self.total += got
            self.last = time.monotonic()

    def close(self) -> None:
        self.server.close()


def one_run(
    rig: KataRig, host: CniHost, runtime: str, name: str, pod: Path, mib: int
) -> dict[str, float]:
    """Stream `mib` MiB from a container of `runtime` in `pod` to a receiver on the gateway."""
    gateway = host.network(0).gateway
    receiver = Receiver(host, gateway, mib << 20)
    try:
        stream = f"dd if=/dev/zero bs=1048576 count={mib} 2>/dev/null"
        script = f"{stream} | nc {gateway} {receiver.port}"
        task_id = rig.id(name)
        args = rig.run_args(task_id, rig.sh(script), "--rm", "--with-ns", f"network:{pod}")
        args[args.index(KATA)] = runtime
        began = time.monotonic()
        done = rig.ctr(*args, timeout=RUN_TIMEOUT)
        ended = time.monotonic()
        receiver.thread.join(10)
    finally:
        receiver.close()
    if receiver.total != mib << 20:
        out = (done.stdout + done.stderr).decode(errors="replace")[-500:]
        raise RuntimeError(f"{runtime}: {receiver.total} of {mib} MiB arrived (ctr: {out})")
    rate = receiver.total / (receiver.last - receiver.first) / 1e6
    return {"MBps": rate, "wall_s": ended - began}


def summarize(samples: list[dict[str, float]]) -> dict[str, float]:
    rates = [s["MBps"] for s in samples]
    return {
        "median_MBps": round(statistics.median(rates), 1),
        "best_MBps": round(max(rates), 1),
        "median_wall_s": round(statistics.median(s["wall_s"] for s in samples), 2),
        "runs": len(samples),
    }


def measure(
    rig: KataRig, host: CniHost, plan: list[tuple[str, str]], mib: int, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """`rounds` rounds of the (label, runtime) `plan`, the order alternating per round."""
    pod = host.new_pod("pod")
    host.attach(pod, host.network(0))
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _ in plan}
    for label, runtime in plan:  # warm-up: binaries, page cache, ARP
        one_run(rig, host, runtime, f"warm-{label}", pod, 8)
    for i in range(rounds):
        for label, runtime in plan if i % 2 == 0 else plan[::-1]:
            samples[label].append(one_run(rig, host, runtime, f"{label}{i}", pod, mib))
    return samples


def local_and_runc(mib: int, rounds: int) -> dict[str, Any]:
    with CniHost(prefix="netbench-") as host, KataRig(prefix="netbench-") as rig:
        samples = measure(rig, host, [("runc_v2", RUNC), ("kata_local", KATA)], mib, rounds)
    return {label: summarize(runs) for label, runs in samples.items()}


def vm(mib: int, rounds: int, image: Path) -> dict[str, Any]:
    keys = {
        "kernel": str(image / "vmlinux"),
        "initrd": str(image / "kata-shim-initrd.img"),
        "accel": "auto",
    }
    with (
        CniHost(prefix="netbench-") as host,
        KataRig(hypervisor="qemu", hypervisor_keys=keys, prefix="netbench-") as rig,
    ):
        samples = measure(rig, host, [("kata_qemu_tcg", KATA)], mib, rounds)
    return summarize(samples["kata_qemu_tcg"])


def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    return round(float(a["median_MBps"]) / float(b["median_MBps"]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of runc + local")
    parser.add_argument("--vm-rounds", type=int, default=1)
    parser.add_argument("--image", type=Path, default=Path("/tmp/kata-shim-test-image"))
    parser.add_argument("--no-vm", action="store_true", help="skip the VM sandbox")
    args = parser.parse_args()
    results = local_and_runc(args.mib, args.rounds)
    if not args.no_vm:
        from kata_shim.image.builder import build

        build(args.image)
        results["kata_qemu_tcg"] = vm(args.mib, args.vm_rounds, args.image)
    ratios = {"local_over_runc": ratio(results["kata_local"], results["runc_v2"])}
    if "kata_qemu_tcg" in results:
        ratios["vm_over_runc"] = ratio(results["kata_qemu_tcg"], results["runc_v2"])
        ratios["vm_over_local"] = ratio(results["kata_qemu_tcg"], results["kata_local"])
    report = {
        "benchmark": "net_throughput",
        "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "mib_per_run": args.mib,
        "path": "busybox dd | nc in the pod netns -> TCP receiver in the host netns (CNI bridge)",
        "results": results,
        "ratios": ratios,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
