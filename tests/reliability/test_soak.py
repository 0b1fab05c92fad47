"""Soak: 500 sequential `ctr run --rm` through one long-lived containerd, and meanwhile
500 sequential execs in one long-lived pod.

Every `ctr run --rm` starts (and ends) a shim and an agent of its own, so the
per-process flatness check is made on the long-lived pod: its shim and its
agent serve 500 execs, and their fd counts and RSS at the end must be within
±10 % of what they were after a warm-up of 50 (fds: ±10 % or ±2). Zero failures
allowed in either loop; containerd's own fd count must stay flat too; at the end
nothing is left behind (leaks.py).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from kata_shim.devenv.shim import KataRig
from tests.integration.test_shim_containerd import _out, kill_and_remove, start_sleeper
from tests.reliability.leaks import Inventory, leaks
from tests.reliability.shimclient import bundle_dir
from tests.reliability.test_faults import _agent_pid

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

RUNS = int(os.environ.get("KATA_SOAK_RUNS", "500"))
WARMUP = RUNS // 10


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def sample(pids: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {name: (fds(pid), rss_kb(pid)) for name, pid in pids.items()}


def _exec_loop(rig: KataRig, pod: str, pids: dict[str, int], out: dict[str, object]) -> None:
    failures = []
    for i in range(RUNS):
        result = rig.ctr("task", "exec", "--exec-id", f"e{i}", pod, "/bin/echo", f"x{i}")
        if result.returncode != 0 or result.stdout != f"x{i}\n".encode():
            failures.append(f"exec {i}: {_out(result)}")
        if i + 1 == WARMUP:
            out["warm"] = sample(pids)
    out["end"] = sample(pids)
    out["failures"] = failures


def test_500_runs_and_500_execs_stay_flat(rig: KataRig, before: Inventory) -> None:
    pod = start_sleeper(rig, "soakpod")
    shim = int((bundle_dir(rig, pod) / "shim.pid").read_text())
    pids = {"shim": shim, "agent": _agent_pid(shim)}
    containerd = rig.containerd.pid
    assert containerd is not None
    execs: dict[str, object] = {}
    thread = threading.Thread(target=_exec_loop, args=(rig, pod, pids, execs))
    thread.start()
    failures, ctd_fds = [], {}
    for i in range(RUNS):
        task_id = f"{rig.marker}-soak{i}"
        result = rig.ctr(*rig.run_args(task_id, ["/bin/echo", f"run{i}"], "--rm"))
        if result.returncode != 0 or result.stdout != f"run{i}\n".encode():
            failures.append(f"run {i}: {_out(result)}")
        if i + 1 in (WARMUP, RUNS):
            ctd_fds[i + 1] = fds(containerd)
    thread.join()
    print(f"soak: runs {RUNS}, exec samples warm {execs['warm']} end {execs['end']}")
    print(f"soak: containerd fds {ctd_fds}")
    assert failures == [] and execs["failures"] == []
    warm, end = execs["warm"], execs["end"]
    assert isinstance(warm, dict) and isinstance(end, dict)
    for name in pids:
        (fd0, rss0), (fd1, rss1) = warm[name], end[name]
        assert abs(fd1 - fd0) <= max(2, fd0 // 10), f"{name} fds {fd0} -> {fd1}"
        assert abs(rss1 - rss0) <= rss0 // 10, f"{name} RSS {rss0} -> {rss1} kB"
    assert abs(ctd_fds[RUNS] - ctd_fds[WARMUP]) <= max(2, ctd_fds[WARMUP] // 10), ctd_fds
    kill_and_remove(rig, pod)
    assert leaks(before, rig) == []
