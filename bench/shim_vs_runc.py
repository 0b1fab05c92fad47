"""Our shim (local sandbox) next to containerd-shim-runc-v2 on one private containerd.

Measurements (each runtime in the same run, interleaved where it is sequential):
  start       `ctr run --rm … /bin/true` wall time per run
  concurrent  N pods (`sleep 600`) started at once with `ctr run -d`: wall time
  memory      RSS/PSS (/proc/<pid>/smaps_rollup) per pod: the shim (pid from the
              Connect RPC on its socket) plus, for ours, its kata-agent-py child and
              the fork server's PSS divided by the pods (PSS already splits the
              pages a forked daemon shares with the server and its siblings)
  exit        SIGKILL of a pod's init → `/tasks/exit` seen by one `ctr events`
  rpc         unary Connect round trips/s on one ttrpc connection (our client)
`compare()` returns a JSON-able dict; bench/report.py prints it with a table.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ttrpc_rate import uvloop_run

from kata_shim.devenv.shim import RUNTIME as KATA
from kata_shim.devenv.shim import KataRig
from kata_shim.proto import task_pb2
from kata_shim.shim import forkproto
from kata_shim.ttrpc.client import Client

RUNC = "io.containerd.runc.v2"
RUNTIMES = (KATA, RUNC)
SHORT = {KATA: "kata", RUNC: "runc"}
TASK_SERVICE = "containerd.task.v2.Task"
AGENT_MARK = b"kata_shim.guest.main"


# ---------------------------------------------------------------- helpers


def med(values: Iterable[float], digits: int = 4) -> float:
    return round(statistics.median(list(values)), digits)


def ratio(ours: float, runc: float) -> float:
    return round(ours / runc, 3) if runc else float("inf")


def interleaved(count: int) -> Iterable[tuple[int, str]]:
    """(i, runtime) alternating which runtime goes first each round."""
    for i in range(count):
        for runtime in RUNTIMES if i % 2 == 0 else RUNTIMES[::-1]:
            yield i, runtime


def ctr_argv(
    rig: KataRig, runtime: str, task_id: str, command: list[str], *flags: str
) -> list[str]:
    args = rig.run_args(task_id, command, *flags)
    args[args.index(KATA)] = runtime
    return ["ctr", "--address", rig.containerd.address, *args]


def transient(rig: KataRig, name: str) -> str:
    """An id for a `ctr run --rm` (gone when ctr returns: not in rig.ids for cleanup)."""
    return f"{rig.marker}-{name}"


def pod_command(task_id: str) -> list[str]:
    """A long-running init whose argv names the task (so its pid can be found)."""
    return ["/bin/sh", "-c", f"sleep 600; : {task_id}"]


def run_checked(argv: list[str], timeout: float = 60.0) -> float:
    began = time.monotonic()
    result = subprocess.run(argv, capture_output=True, timeout=timeout)
    took = time.monotonic() - began
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[3:6])}: {result.stderr.decode(errors='replace')}")
    return took


def remove_task(rig: KataRig, task_id: str) -> None:
    rig.ctr("task", "kill", "-s", "SIGKILL", task_id, timeout=20)
    rig.ctr("task", "delete", "--force", task_id, timeout=20)
    rig.ctr("container", "delete", task_id, timeout=20)


# ---------------------------------------------------------------- processes
def shim_address(rig: KataRig, task_id: str) -> str:
    bundle = rig.containerd.work / "state" / "io.containerd.runtime.v2.task" / "default" / task_id
    address = (bundle / "address").read_text().strip()
    return address.removeprefix("unix://")


async def _connect_reply(path: str, task_id: str) -> task_pb2.ConnectResponse:
    client = await Client.connect_unix(path, timeout=5)
    try:
        return await client.call(
            TASK_SERVICE, "Connect", task_pb2.ConnectRequest(id=task_id), task_pb2.ConnectResponse
        )
    finally:
        client.close()


def shim_pid(rig: KataRig, task_id: str) -> int:
    reply = uvloop_run(_connect_reply(shim_address(rig, task_id), task_id))
    return int(reply.shim_pid)


def children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(name))
    return found


def agent_pids(shim: int) -> list[int]:
    pids = []
    for child in children(shim):
        try:
            if AGENT_MARK in Path(f"/proc/{child}/cmdline").read_bytes():
                pids.append(child)
        except OSError:
            continue
    return pids


def smaps_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key.lower()] = int(rest.split()[0])
    return values


def init_pid(task_id: str) -> int:
    """The pod's /bin/sh init (its argv names the task)."""
    needle = f": {task_id}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if argv.startswith(b"/bin/sh\0") and argv.rstrip(b"\0").endswith(needle):
            return int(name)
    raise RuntimeError(f"no init process for {task_id}")


# ---------------------------------------------------------------- events
class ExitWatcher:
    """One `ctr events` process; records when each container's /tasks/exit arrives."""

    def __init__(self, rig: KataRig) -> None:
        self.proc = rig.containerd.popen_ctr("events")
        self.seen: queue.Queue[tuple[str, float]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            now = time.monotonic()
            line = raw.decode(errors="replace")
            if " /tasks/exit " not in line:
                continue
            marker = '"container_id":"'
            start = line.find(marker)
            if start >= 0:
                start += len(marker)
                self.seen.put((line[start : line.index('"', start)], now))

    def wait_exit(self, task_id: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                container, when = self.seen.get(timeout=left)
            except queue.Empty:
                break
            if container == task_id:
                return when
        raise RuntimeError(f"no /tasks/exit for {task_id} within {timeout}s")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# ---------------------------------------------------------------- measurements
def start_latency(rig: KataRig, runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    for runtime in RUNTIMES:  # warm-up: page cache, binaries
        warm = transient(rig, f"w{SHORT[runtime]}")
        run_checked(ctr_argv(rig, runtime, warm, ["/bin/true"], "--rm"))
    for i, runtime in interleaved(runs):
        task_id = transient(rig, f"s{SHORT[runtime]}{i}")
        samples[runtime].append(run_checked(ctr_argv(rig, runtime, task_id, ["/bin/true"], "--rm")))
    return samples


def busy_jiffies() -> int:
    """Host-wide busy CPU time (user+nice+system+irq+softirq+steal) in clock ticks."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[i] for i in (0, 1, 2, 5, 6, 7))


def start_pods(rig: KataRig, runtime: str, names: list[str]) -> float:
    """Start one `ctr run -d` per name at once; wall time until every one returned."""
    began = time.monotonic()
    procs = [
        subprocess.Popen(
            ctr_argv(rig, runtime, name, pod_command(name), "-d"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for name in names
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    took = time.monotonic() - began
    failed = [e for p, e in zip(procs, errors, strict=True) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"{runtime}: {len(failed)} pods failed: {failed[0]!r}")
    return took


def forked_from_server(pid: int | str, rig: KataRig) -> bool:
    """Whether `pid` is the fork server of this rig's containerd or one of its children: the
    kernel keeps the server's initial environment block, which names the address."""
    mark = f"{forkproto.ADDRESS_ENV}={rig.containerd.address}\0".encode()
    return mark in Path(f"/proc/{pid}/environ").read_bytes()


def fork_server_pid(rig: KataRig) -> int | None:
    """The fork server serving this rig's containerd."""
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if forked_from_server(name, rig) and Path(
                f"/proc/{name}/cmdline"
            ).read_bytes().endswith(b"kata_shim.shim.forkserver\0"):
                return int(name)
        except OSError:
            continue
    return None


def memory(rig: KataRig, pods: dict[str, list[str]]) -> dict[str, Any]:
    """Per-pod RSS/PSS; ours adds the fork server's PSS spread over the pods it forked."""
    report = _memory(rig, pods)
    server = fork_server_pid(rig)
    share = smaps_kb(server)["pss"] / len(pods[KATA]) if server else 0.0
    kata = report["kata"]
    kata["fork_server_pss_kb"] = smaps_kb(server)["pss"] if server else 0
    kata["shim_pss_kb"] = round(kata["shim_pss_kb"] + share)
    kata["pod_pss_kb"] = round(kata["pod_pss_kb"] + share)
    return report


def _memory(rig: KataRig, pods: dict[str, list[str]]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for runtime, names in pods.items():
        per_pod: list[dict[str, int]] = []
        for name in names:
            shim = shim_pid(rig, name)
            shim_mem = smaps_kb(shim)
            agents = agent_pids(shim) if runtime == KATA else []
            agent_mem = [smaps_kb(pid) for pid in agents]
            per_pod.append(
                {
                    "shim_rss_kb": shim_mem["rss"],
                    "shim_pss_kb": shim_mem["pss"],
                    "agent_rss_kb": sum(m["rss"] for m in agent_mem),
                    "agent_pss_kb": sum(m["pss"] for m in agent_mem),
                    "agents": len(agents),
                }
            )
        keys = ("shim_rss_kb", "shim_pss_kb", "agent_rss_kb", "agent_pss_kb")
        summary: dict[str, Any] = {key: med(p[key] for p in per_pod) for key in keys}
        summary["pod_pss_kb"] = med(p["shim_pss_kb"] + p["agent_pss_kb"] for p in per_pod)
        summary["pod_rss_kb"] = med(p["shim_rss_kb"] + p["agent_rss_kb"] for p in per_pod)
        summary["pods"] = len(per_pod)
        summary["agents_found"] = sum(p["agents"] for p in per_pod)
        report[SHORT[runtime]] = summary
    return report


def exit_latency(
    rig: KataRig, watcher: ExitWatcher, pods: dict[str, list[str]], runs: int
) -> dict[str, list[float]]:
    """Kill pods' inits one by one (starting more when `pods` runs out); pods shrinks."""
    samples: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    queues = pods
    for i, runtime in interleaved(runs):
        if not queues[runtime]:
            name = rig.id(f"x{SHORT[runtime]}{i}")
            start_pods(rig, runtime, [name])
            queues[runtime].append(name)
        name = queues[runtime].pop(0)
        pid = init_pid(name)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        samples[runtime].append(watcher.wait_exit(name) - killed)
        rig.ctr("task", "delete", name, timeout=20)
        rig.ctr("container", "delete", name, timeout=20)
        rig.ids.remove(name)
    return samples


def concurrent_start(rig: KataRig, batches: dict[str, list[str]]) -> dict[str, Any]:
    """Each runtime's batch started at once; wall time and host CPU seconds per pod."""
    tick = os.sysconf("SC_CLK_TCK")
    walls, cpu = {}, {}
    for runtime in (RUNC, KATA):
        busy = busy_jiffies()
        walls[runtime] = start_pods(rig, runtime, batches[runtime])
        cpu[runtime] = (busy_jiffies() - busy) / tick / len(batches[runtime])
    return {
        "pods": len(batches[KATA]),
        "kata_wall_s": round(walls[KATA], 3),
        "runc_wall_s": round(walls[RUNC], 3),
        "ratio": ratio(walls[KATA], walls[RUNC]),
        "kata_host_cpu_s_per_pod": round(cpu[KATA], 3),
        "runc_host_cpu_s_per_pod": round(cpu[RUNC], 3),
    }


async def _rpc_rate(path: str, task_id: str, seconds: float, callers: int) -> float:
    client = await Client.connect_unix(path, timeout=5)
    request = task_pb2.ConnectRequest(id=task_id)
    count = 0

    async def caller(deadline: float) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await client.call(TASK_SERVICE, "Connect", request, task_pb2.ConnectResponse)
            count += 1

    try:
        await caller(time.perf_counter() + min(0.3, seconds))  # warm-up
        count = 0
        began = time.perf_counter()
        await asyncio.gather(*(caller(began + seconds) for _ in range(callers)))
        return count / (time.perf_counter() - began)
    finally:
        client.close()


def rpc_rate(rig: KataRig, pods: dict[str, str], seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Connect round trips/s, `rounds` interleaved rounds per runtime, median of rounds."""
    report: dict[str, Any] = {}
    for callers in (1, 16):
        rates: dict[str, list[float]] = {r: [] for r in RUNTIMES}
        for _, runtime in interleaved(rounds):
            name = pods[runtime]
            path = shim_address(rig, name)
            rates[runtime].append(uvloop_run(_rpc_rate(path, name, seconds, callers)))
        ours, runc = statistics.median(rates[KATA]), statistics.median(rates[RUNC])
        report[f"callers{callers}"] = {
            "kata_rps": round(ours),
            "runc_rps": round(runc),
            "ratio": ratio(ours, runc),
            "rounds": rounds,
        }
    return report


def pair(samples: dict[str, list[float]], digits: int = 6) -> dict[str, Any]:
    """Medians (µs resolution) and their ratio, from the unrounded medians: an exit takes
    ~2 ms, where rounding each median to 0.1 ms moved the ratio by up to 10 %."""
    ours, runc = statistics.median(samples[KATA]), statistics.median(samples[RUNC])
    return {
        "kata_median_s": round(ours, digits),
        "runc_median_s": round(runc, digits),
        "ratio": ratio(ours, runc),
        "runs": len(samples[KATA]),
    }


def compare(
    runs: int, pods: int, exit_runs: int, rpc_seconds: float, progress: Callable[[str], None]
) -> dict[str, Any]:
    """All five measurements on one rig; returns the JSON-able report."""
    result: dict[str, Any] = {}
    with KataRig() as rig:
        watcher = ExitWatcher(rig)
        try:
            progress(f"start latency: {runs} runs per runtime")
            result["start"] = pair(start_latency(rig, runs))
            progress(f"concurrent start: {pods} pods per runtime")
            batches = {r: [rig.id(f"c{SHORT[r]}{i}") for i in range(pods)] for r in RUNTIMES}
            result["concurrent_start"] = concurrent_start(rig, batches)
            progress("memory")
            result["memory"] = memory(rig, batches)
            progress("rpc rate")
            result["rpc"] = rpc_rate(rig, {r: batches[r][0] for r in RUNTIMES}, rpc_seconds)
            progress(f"exit latency: {exit_runs} runs per runtime")
            result["exit"] = pair(exit_latency(rig, watcher, batches, exit_runs))
            for names in batches.values():
                for name in names:
                    remove_task(rig, name)
                    rig.ids.remove(name)
        finally:
            watcher.close()
    return result
