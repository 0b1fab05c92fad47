"""What Python itself costs: the floor under our shim's start latency and memory.

A `ctr run --rm` through our shim runs four Python processes in series on the
critical path — `start`, the daemon, the local sandbox's agent, `delete` — where
runc-v2 runs Go binaries; and each pod keeps two of them (daemon + agent)
resident. This measures, with the interpreter the shim uses (median of --runs):
  *_s       wall time of a fresh interpreter that imports what that process imports
  *_anon_kb private (anonymous) PSS of such an interpreter after its imports
`floor_s` = the four processes' import-only times added to runc-v2's start:
what our start latency would be if the shim and agent did no work at all.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

PROBES = {
    "python_bare": "pass",
    "python_asyncio": "import asyncio",
    "start_action": "import kata_shim.shim.main, kata_shim.shim.start",
    "delete_action": "import kata_shim.shim.main, kata_shim.shim.delete, kata_shim.config",
    "daemon": "import uvloop, kata_shim.shim.main, kata_shim.shim.serve, kata_shim.shim.daemon",
    "agent": "import kata_shim.guest.main",
}
ANON = (
    "import gc; gc.collect(); print(next(int(l.split()[1]) for l in "
    "open('/proc/self/smaps_rollup') if l.startswith('Pss_Anon:')))"
)


def wall(code: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def anon_kb(code: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{ANON}"], capture_output=True, text=True, check=True
    )
    return int(result.stdout)


def bounds(runc_start_s: float, runs: int = 7) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, code in PROBES.items():
        report[f"{name}_s"] = round(wall(code, runs), 4)
        report[f"{name}_anon_kb"] = anon_kb(code)
    serial = ("start_action", "daemon", "agent", "delete_action")
    report["floor_s"] = round(runc_start_s + sum(report[f"{n}_s"] for n in serial), 4)
    report["floor_ratio"] = round(report["floor_s"] / runc_start_s, 3)
    report["resident_floor_anon_kb"] = report["daemon_anon_kb"] + report["agent_anon_kb"]
    return report
