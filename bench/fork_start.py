"""The shim's own start/delete path, cold exec vs fork server, without containerd in the way.

Drives the installed `containerd-shim-kata-v2` the way containerd does (cwd =
a scratch bundle, `-address` naming a unix socket this script listens on so
the fork server lives) and measures, per mode (`cold`: KATA_SHIM_FORK_SERVER=off,
`fork`: on, server already warm), median of --runs:
  start_s        wall time of the `start` action (until it printed the address)
  ready_s        `start` launched → the daemon answers Task.Connect
                 (fork mode: the server's fork + child setup + serve, "fork → ready")
  delete_s       wall time of the `delete` action after the daemon shut down
`fork` runs the installed `containerd-shim-kata-v2`, the C front (csrc/shimfront.c):
start/delete run in a fork of the server. `fork_python_entry` runs the same with
`containerd-shim-kata-v2-py` (a Python process per action, daemon forked by the server).
And, with --pods idle daemons alive at once (/proc/<pid>/smaps_rollup):
  daemon_pss_kb  median PSS of one daemon (shared pages split between sharers)
  server_pss_kb  the fork server's PSS, also shared with its children
  per_pod_pss_kb daemon PSS + server PSS / pods (the server's cost spread over pods)
  daemon_uss_kb  median private (Private_Clean + Private_Dirty) of one daemon
Prints JSON. Run: `.venv/bin/python bench/fork_start.py [--runs 20] [--pods 20]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2
from ttrpc_rate import uvloop_run

from kata_shim.devenv.shim import console_script
from kata_shim.proto import task_pb2
from kata_shim.shim import forkproto, procs
from kata_shim.shim.paths import socket_address, socket_path
from kata_shim.ttrpc.client import Client

NAMESPACE = "forkbench"
TASK = "containerd.task.v2.Task"
SPEC = {
    "ociVersion": "1.0.2",
    "process": {"args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin"]},
    "root": {"path": "rootfs"},
    "annotations": {},
}


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.shim = str(console_script() or shutil.which("containerd-shim-kata-v2"))
        # the Python entry beside the C front: start/delete as Python processes (pre-front path)
        self.python_entry = self.shim + "-py"
        self.address = str(work / "containerd.sock")
        self.fake_containerd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.fake_containerd.bind(self.address)
        self.fake_containerd.listen(1)
        self.count = 0
        self.stuck = 0  # daemons that did not exit after Shutdown (killed; reported)

    def env(self, fork: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("TTRPC_ADDRESS", "EXIT_FIFO_DIR")}
        env[forkproto.ENABLE_ENV] = "on" if fork else "off"
        return env

    def bundle(self) -> tuple[str, Path]:
        self.count += 1
        task_id = f"fork{os.getpid()}b{self.count}"
        path = self.work / task_id
        (path / "rootfs").mkdir(parents=True)
        (path / "config.json").write_text(json.dumps(SPEC))
        return task_id, path

    def action(self, task_id: str, bundle: Path, action: str, fork: bool) -> float:
        argv = [self.shim, "-namespace", NAMESPACE, "-address", self.address]
        argv += ["-publish-binary", "/bin/true", "-id", task_id, "-bundle", str(bundle), action]
        began = time.perf_counter()
        subprocess.run(
            argv, cwd=bundle, env=self.env(fork), stdin=subprocess.DEVNULL, capture_output=True,
            check=True, timeout=30,
        )  # fmt: skip
        return time.perf_counter() - began

    def start(self, fork: bool) -> tuple[str, Path, float, float, int]:
        task_id, bundle = self.bundle()
        began = time.perf_counter()
        took = self.action(task_id, bundle, "start", fork)
        path = socket_path(socket_address(self.address, NAMESPACE, task_id)) or ""
        while (pid := procs.probe_connect(path, task_id, timeout=2.0)) is None:
            time.sleep(0.001)
        return task_id, bundle, took, time.perf_counter() - began, pid

    def stop(self, task_id: str, bundle: Path, pid: int, fork: bool) -> float:
        path = socket_path(socket_address(self.address, NAMESPACE, task_id)) or ""
        try:
            uvloop_run(_shutdown(path, task_id))
        except Exception as exc:
            print(f"fork_start: Shutdown of {task_id} failed: {exc!r}", file=sys.stderr)
        if not procs.wait_gone(pid, 5.0):  # never leave a daemon behind
            self.stuck += 1
            procs.stop_process(pid)
        return self.action(task_id, bundle, "delete", fork)

    def warm_server(self) -> None:
        task_id, bundle, _, _, pid = self.start(fork=True)
        self.stop(task_id, bundle, pid, fork=True)
        sock = forkproto.server_paths(self.address)["socket"]
        deadline = time.monotonic() + 60
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)

    def server_pid(self) -> int | None:
        mark = f"{forkproto.ADDRESS_ENV}={self.address}\0".encode()
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                if mark in Path(f"/proc/{name}/environ").read_bytes():
                    argv = procs.cmdline(int(name)) or []
                    if argv[-1:] == ["kata_shim.shim.forkserver"]:
                        return int(name)
            except OSError:
                continue
        return None


async def _shutdown(path: str, task_id: str) -> None:
    client = await Client.connect_unix(path, timeout=5)
    try:
        await client.call(TASK, "Shutdown", task_pb2.ShutdownRequest(id=task_id), empty_pb2.Empty)
    except ConnectionError:  # the daemon may close before it answers
        pass
    finally:
        client.close()


def smaps(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Private_Clean", "Private_Dirty", "Rss"):
            values[key] = int(rest.split()[0])
    return values


def timings(bench: Bench, fork: bool, runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {"start_s": [], "ready_s": [], "delete_s": []}
    for _ in range(runs):
        task_id, bundle, took, ready, pid = bench.start(fork)
        samples["start_s"].append(took)
        samples["ready_s"].append(ready)
        samples["delete_s"].append(bench.stop(task_id, bundle, pid, fork))
    return {k: round(statistics.median(v), 4) for k, v in samples.items()}


def memory(bench: Bench, fork: bool, pods: int) -> dict[str, Any]:
    started = [bench.start(fork) for _ in range(pods)]
    try:
        time.sleep(1.0)  # let each daemon finish its first steps
        daemons = [smaps(pid) for *_, pid in started]
        report: dict[str, Any] = {
            "pods": pods,
            "daemon_pss_kb": statistics.median(d["Pss"] for d in daemons),
            "daemon_rss_kb": statistics.median(d["Rss"] for d in daemons),
            "daemon_uss_kb": statistics.median(
                d["Private_Clean"] + d["Private_Dirty"] for d in daemons
            ),
        }
        server = bench.server_pid() if fork else None
        report["server_pss_kb"] = smaps(server)["Pss"] if server else 0
        report["per_pod_pss_kb"] = round(report["daemon_pss_kb"] + report["server_pss_kb"] / pods)
        return report
    finally:
        for task_id, bundle, _, _, pid in started:
            bench.stop(task_id, bundle, pid, fork)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fork-bench-"))
    bench = Bench(work)
    result: dict[str, Any] = {"benchmark": "fork_start"}
    try:
        bench.warm_server()
        for mode, fork in (("cold", False), ("fork", True)):
            result[mode] = timings(bench, fork, args.runs)
            result[mode]["memory"] = memory(bench, fork, args.pods)
        front, bench.shim = bench.shim, bench.python_entry
        result["fork_python_entry"] = timings(bench, True, args.runs)
        bench.shim = front
        cold, fork_ = result["cold"], result["fork"]
        result["ratios_fork_over_cold"] = {
            k: round(fork_[k] / cold[k], 3) for k in ("start_s", "ready_s", "delete_s")
        }
        result["ratios_front_over_python_entry"] = {
            k: round(fork_[k] / result["fork_python_entry"][k], 3)
            for k in ("start_s", "ready_s", "delete_s")
        }
        result["daemons_killed_after_shutdown"] = bench.stuck
    finally:
        bench.fake_containerd.close()
        shutil.rmtree(work, ignore_errors=True)  # the server sees containerd gone and exits
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
