"""`make bench`: our shim vs containerd-shim-runc-v2, plus IO throughput and VM boot.

Runs bench/shim_vs_runc.py's measurements in-process, then bench/io_throughput.py,
bench/vm_boot.py and bench/vm_density.py as subprocesses (when present) and folds
their JSON in.
Prints a short table on stderr and one JSON object on stdout (also written to
--json PATH). Each target (issue 18) is checked: ours/runc start ≤ 1.5x, shim
daemon PSS and local agent PSS each ≤ 6 MB per pod at 20 pods (the fork
server's PSS spread over the pods), exit latency ≤ 1.2x, RPC rate ≥ 1.0x,
20 concurrent pods ≤ 2.0x. bench/fork_start.py adds our start path alone:
fork server vs cold exec (start, fork → daemon ready, delete, per-pod PSS).

Run: `.venv/bin/python bench/report.py [--runs 30] [--pods 20] [--exit-runs 30]
[--rpc-seconds 2] [--no-external] [--json out.json]`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bounds import bounds
from shim_vs_runc import compare

HERE = Path(__file__).resolve().parent
EXTERNAL = {
    "fork_start": ["fork_start.py", "--runs", "20", "--pods", "20"],
    "io_throughput": ["io_throughput.py", "--mib", "256", "--rounds", "3"],
    "vm_boot": ["vm_boot.py", "--runs", "2"],
    "vm_density": ["vm_density.py", "--pods", "10"],  # both boot designs (issue 17)
    "vm_bounds": ["vm_bounds.py", "--runs", "2"],  # the guest's stages of a VM pod start
}
TIMEOUTS = {"vm_density": 3600.0}  # 2 x 10 TCG VMs on a 2-CPU host
GUEST_STAGES = (
    "kernel_to_init_s",
    "init_to_selftest_s",
    "python_start_warm_s",
    "agent_import_warm_s",
)
PSS_LIMIT_KB = 6 * 1024  # per process kind (shim daemon, local agent), at 20 pods


def external(name: str, timeout: float) -> dict[str, Any]:
    script, *args = EXTERNAL[name]
    if not (HERE / script).exists():
        return {"skipped": f"{script} not present"}
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(HERE / script), *args], capture_output=True, timeout=timeout
    )
    if result.returncode != 0:
        return {"error": result.stderr.decode(errors="replace")[-2000:]}
    text = result.stdout.decode()
    report: dict[str, Any] = json.loads(text[text.index("{") :])
    report["bench_wall_s"] = round(time.monotonic() - began, 1)
    return report


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    memory = result["memory"]["kata"]
    checks = {
        "start_ratio": (result["start"]["ratio"], "<=", 1.5),
        "shim_pss_kb": (memory["shim_pss_kb"], "<=", PSS_LIMIT_KB),
        "agent_pss_kb": (memory["agent_pss_kb"], "<=", PSS_LIMIT_KB),
        "exit_ratio": (result["exit"]["ratio"], "<=", 1.2),
        "rpc_ratio": (result["rpc"]["callers1"]["ratio"], ">=", 1.0),
        "concurrent_ratio": (result["concurrent_start"]["ratio"], "<=", 2.0),
    }
    return {
        name: {
            "value": value,
            "target": f"{op} {limit}",
            "met": value <= limit if op == "<=" else value >= limit,
        }
        for name, (value, op, limit) in checks.items()
    }


def fork_rows(fork: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """bench/fork_start.py: our start path, fork server vs cold exec (columns: fork, cold)."""
    if "fork" not in fork:
        return []
    warm, cold, ratios = fork["fork"], fork["cold"], fork["ratios_fork_over_cold"]
    timed = (
        ("start action", "start_s"),
        ("start → daemon ready", "ready_s"),
        ("delete action", "delete_s"),
    )
    return [
        *((f"[fork | cold] {what} (s)", warm[k], cold[k], ratios[k]) for what, k in timed),
        (
            f"[fork | cold] daemon PSS+server share, {warm['memory']['pods']} idle (kB)",
            warm["memory"]["per_pod_pss_kb"],
            cold["memory"]["per_pod_pss_kb"],
            "",
        ),
        (
            "[fork | cold] daemon private USS (kB)",
            warm["memory"]["daemon_uss_kb"],
            cold["memory"]["daemon_uss_kb"],
            "",
        ),
    ]


def density_rows(density: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """bench/vm_density.py: per idle VM pod, the root image design next to the initrd one."""
    if "image" not in density or "initrd" not in density:
        return []
    new, old = density["image"], density["initrd"]
    keys = (
        ("QEMU PSS anon", "qemu_pss_anon_kb"),
        ("QEMU PSS file", "qemu_pss_file_kb"),
        ("shim PSS", "shim_pss_kb"),
        ("pod PSS (QEMU+virtiofsd+shim)", "pod_pss_kb"),
        ("guest used", "guest_used_kb"),
    )
    rows: list[tuple[str, Any, Any, Any]] = [
        (f"[image | initrd] {what} (kB)", new["memory"][k], old["memory"][k], "")
        for what, k in keys
    ]
    for what, k in (("create→first output", "create_to_first_output_s"),
                    ("bare kernel→/init", "bare_kernel_to_init_s")):  # fmt: skip
        rows.append((f"[image | initrd] {what} (s)", new[k], old[k], ""))
    return rows


def bounds_rows(guest: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """bench/vm_bounds.py: the guest's own stages (guest uptime), image | initrd design."""
    if "image" not in guest or "initrd" not in guest:
        return []
    new, old = guest["image"], guest["initrd"]
    return [
        (f"[image | initrd] guest {key.removesuffix('_s')} (s)", new[key], old[key], "")
        for key in GUEST_STAGES
    ]


def file_io_rows(density: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """bench/vm_density.py's file IO in a container: virtio-fs next to 9p (ratio fs/9p)."""
    io = density.get("file_io", {})
    if "virtio-fs" not in io or "virtio-9p" not in io:
        return []
    fs, p9 = io["virtio-fs"], io["virtio-9p"]
    keys = (
        (f"dd write {io['mib']} MiB (MB/s)", "write_mb_s"),
        (f"dd read {io['mib']} MiB (MB/s)", "read_mb_s"),
        (f"tar -x {io['files']} files (s)", "tar_x_s"),
        ("chown (files/s)", "chown_files_s"),
    )
    return [
        (f"[virtio-fs | 9p] {what}", fs[k], p9[k], round(fs[k] / p9[k], 2) if p9[k] else "")
        for what, k in keys
    ]


def table(result: dict[str, Any]) -> str:
    start, exits, conc = result["start"], result["exit"], result["concurrent_start"]
    mem, rpc = result["memory"], result["rpc"]["callers1"]
    rows = [
        ("measurement", "kata (ours)", "runc-v2", "ours/runc"),
        ("start ctr run --rm (s)", start["kata_median_s"], start["runc_median_s"], start["ratio"]),
        ("exit SIGKILL→event (s)", exits["kata_median_s"], exits["runc_median_s"], exits["ratio"]),
        (
            f"{conc['pods']} pods concurrently (s)",
            conc["kata_wall_s"],
            conc["runc_wall_s"],
            conc["ratio"],
        ),
        ("Connect RPC/s, 1 caller", rpc["kata_rps"], rpc["runc_rps"], rpc["ratio"]),
        ("PSS per pod (kB)", mem["kata"]["pod_pss_kb"], mem["runc"]["pod_pss_kb"], ""),
        ("  shim PSS (kB)", mem["kata"]["shim_pss_kb"], mem["runc"]["shim_pss_kb"], ""),
        ("  agent PSS (kB)", mem["kata"]["agent_pss_kb"], "-", ""),
        ("  fork server PSS (kB, all pods)", mem["kata"].get("fork_server_pss_kb", 0), "-", ""),
        ("RSS per pod (kB)", mem["kata"]["pod_rss_kb"], mem["runc"]["pod_rss_kb"], ""),
    ]
    b, c = result["bounds"], result["concurrent_start"]
    rows += [
        (
            "host CPU per pod start (s)",
            c["kata_host_cpu_s_per_pod"],
            c["runc_host_cpu_s_per_pod"],
            "",
        ),
        (
            "bound: start if Python only imported",
            b["floor_s"],
            start["runc_median_s"],
            b["floor_ratio"],
        ),
        ("bound: daemon+agent anon PSS (kB)", b["resident_floor_anon_kb"], "-", ""),
    ]
    rows += fork_rows(result.get("fork_start", {}))
    io = result.get("io_throughput", {}).get("local")
    if io:
        rows.append(
            (
                "stdout MB/s",
                io["kata_local"]["median_MBps"],
                io["runc_v2"]["median_MBps"],
                io["ratio_ours_over_runc"],
            )
        )
    vm = result.get("vm_boot", {})
    if "create_to_agent_ready_s" in vm:
        rows.append(("VM create→agent ready (s)", vm["create_to_agent_ready_s"], "-", ""))
    rows += density_rows(result.get("vm_density", {}))
    rows += bounds_rows(result.get("vm_bounds", {}))
    rows += file_io_rows(result.get("vm_density", {}))
    lines = [f"{a:<38} {b!s:>12} {c!s:>12} {d!s:>10}" for a, b, c, d in rows]
    lines += [
        f"target {name}: {t['value']} {t['target']} -> {'met' if t['met'] else 'MISSED'}"
        for name, t in result["targets"].items()
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="start-latency runs per runtime")
    parser.add_argument("--pods", type=int, default=20, help="pods per runtime")
    parser.add_argument("--exit-runs", type=int, default=30)
    parser.add_argument("--rpc-seconds", type=float, default=1.0, help="per round (3 rounds)")
    parser.add_argument("--no-external", action="store_true", help="skip io/vm scripts")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    began = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "shim_vs_runc",
        "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
    }

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    result.update(compare(args.runs, args.pods, args.exit_runs, args.rpc_seconds, progress))
    progress("python floor (bounds)")
    result["bounds"] = bounds(result["start"]["runc_median_s"], runs=3 if args.runs < 5 else 7)
    if not args.no_external:
        for name in EXTERNAL:
            progress(name)
            result[name] = external(name, timeout=TIMEOUTS.get(name, 600.0))
    result["targets"] = targets(result)
    result["wall_s"] = round(time.monotonic() - began, 1)
    print(table(result), file=sys.stderr)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
