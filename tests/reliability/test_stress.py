"""Stress (issue 13): no exec and no run loses its output or its exit code, under CPU starvation.

Per sandbox kind (local, and a QEMU VM under TCG), through a private containerd: parallel
`ctr task exec` workers into one pod, each job with a unique token; `ctr run --rm` loops
beside them; one CPU hog per CPU (nice 0, self-bounded, killed at the end). Jobs rotate
through plain stdout, stderr-only output, non-zero exit codes, `-t` (a tty, ctr under a pty)
and output larger than a pipe (1-3 MiB, checked by sha256). "Late" execs go straight to the
pod's shim and open their FIFOs only after the process has exited (what a starved ctr does).
Every exec and run must return exactly its token and its exit code. The tally is printed as
one `stress:` JSON line (execs, runs, late, lost, failed, wall seconds). KATA_STRESS_SCALE
(default 1) scales the counts, e.g. 5 for a longer hunt on a quiet machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim.devenv.shim import KataRig
from kata_shim.proto import task_pb2
from tests.fakes.vmkeys import vm_keys
from tests.integration.test_shim_containerd import _out, kill_and_remove, wait_status
from tests.reliability.shimclient import call, shim_socket

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

HOG = """import os, time
os.nice({nice})
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    pass
"""
PROCESS_SPEC = "types.containerd.io/opencontainers/runtime-spec/1/Process"


@dataclass(frozen=True)
class Job:
    """One process to run and exactly what it must give back."""

    name: str
    argv: list[str]
    stdout: bytes = b""
    stderr: bytes = b""
    code: int = 0
    tty: bool = False
    digest: bool = False  # compare stdout by sha256 (big output)


def job(i: int, marker: str, big_every: int) -> Job:
    """The i-th job: the kinds rotate, every token is unique."""
    token = f"{marker}t{i}"
    line = f"{token}\n".encode()
    if i % big_every == big_every // 2:
        size = (1 + i % 3) << 20
        data = (line * (size // len(line) + 1))[:size]
        return Job(token, ["sh", "-c", f"yes {token} | head -c {size}"], data, digest=True)
    kind = i % 10
    if kind == 7:
        return Job(token, ["sh", "-c", f"echo {token} >&2"], stderr=line)
    if kind == 8:
        code = 1 + i % 120
        return Job(token, ["sh", "-c", f"echo {token}; exit {code}"], line, code=code)
    if kind == 9:
        return Job(token, ["sh", "-c", f"echo {token}; exit {i % 3}"], line, code=i % 3, tty=True)
    return Job(token, ["/bin/echo", token], line)


@dataclass
class Tally:
    """What came back: lost = wrong/missing output (right code), failed = wrong code or error."""

    execs: int = 0
    runs: int = 0
    late: int = 0
    lost: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, name: str, code: int, want: Job, out: bytes, err: bytes) -> None:
        got_out = hashlib.sha256(out).hexdigest() if want.digest else out
        want_out = hashlib.sha256(want.stdout).hexdigest() if want.digest else want.stdout
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)
            if code != want.code:
                self.failed += 1
            elif got_out != want_out or err != want.stderr:
                self.lost += 1
            else:
                return
            shown = "sha256 " + str(got_out) if want.digest else repr(out[:200])
            self.problems.append(f"{kind} {name}: code {code} (want {want.code}), "
                                 f"stdout {shown}, stderr {err[:200]!r}")  # fmt: skip


def _read_pty(master: int, timeout: float) -> bytes:
    """Everything written to the terminal until every writer closed it (EIO), bounded.

    Not "until ctr exited": the kernel moves pty output to the master asynchronously, so
    under load the last bytes can arrive after the writer is gone.
    """
    output = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([master], [], [], 0.5)[0]:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: ctr (and everything it started) closed the terminal
            break
        if not chunk:
            break
        output += chunk
    return bytes(output)


def _ctr_tty(rig: KataRig, *args: str, timeout: float = 120) -> tuple[int, bytes]:
    """ctr with a terminal on stdin/stdout/stderr (`-t` insists on one)."""
    master, slave = pty.openpty()
    argv = ["ctr", "--address", rig.containerd.address, *args]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        output = _read_pty(master, timeout)
        return proc.wait(timeout), output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def _exec(rig: KataRig, pod: str, want: Job, tally: Tally) -> None:
    args = ["task", "exec", "--exec-id", want.name]
    if want.tty:
        code, raw = _ctr_tty(rig, *args, "-t", pod, *want.argv)
        out = raw.replace(b"\r", b"")  # the ptys turn each \n into \r\n
        tally.record("execs", want.name, code, want, out, b"")
        return
    result = rig.ctr(*args, pod, *want.argv, timeout=120)
    tally.record("execs", want.name, result.returncode, want, result.stdout, result.stderr)


def _run_loop(rig: KataRig, runs: range, tally: Tally) -> None:
    for i in runs:
        token = f"{rig.marker}r{i}"
        want = Job(
            token, ["sh", "-c", f"echo {token}; exit {i % 4}"], f"{token}\n".encode(), code=i % 4
        )
        result = rig.ctr(*rig.run_args(rig.id(f"r{i}"), want.argv, "--rm"), timeout=300)
        tally.record("runs", token, result.returncode, want, result.stdout, result.stderr)


def _read_fifos(paths: list[Path], timeout: float) -> list[bytes]:
    """Open the FIFOs now (late) and read each to EOF."""
    fds = [os.open(path, os.O_RDONLY | os.O_NONBLOCK) for path in paths]
    got = {fd: bytearray() for fd in fds}
    deadline = time.monotonic() + timeout
    try:
        open_fds = set(fds)
        while open_fds and time.monotonic() < deadline:
            for fd in select.select(list(open_fds), [], [], 0.5)[0]:
                chunk = os.read(fd, 65536)
                got[fd] += chunk
                if not chunk:
                    open_fds.discard(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return [bytes(got[fd]) for fd in fds]


def _late_exec(rig: KataRig, pod: str, want: Job, delay: float, tally: Tally) -> None:
    """Exec + Start on the shim; open the FIFOs only once the process is long gone."""
    socket = shim_socket(rig, pod)
    fifos = [rig.work / "late" / f"{want.name}-{stream}" for stream in ("out", "err")]
    for path in fifos:
        path.parent.mkdir(exist_ok=True)
        os.mkfifo(path)
    spec = {"args": want.argv, "cwd": "/", "env": ["PATH=/bin:/usr/bin"], "terminal": False}
    request = task_pb2.ExecProcessRequest(
        id=pod, exec_id=want.name, stdout=str(fifos[0]), stderr=str(fifos[1]),
        spec=AnyMessage(type_url=PROCESS_SPEC, value=json.dumps(spec).encode()),
    )  # fmt: skip
    call(socket, "Exec", request, timeout=60)
    call(socket, "Start", task_pb2.StartRequest(id=pod, exec_id=want.name), timeout=60)
    time.sleep(delay)
    out, err = _read_fifos(fifos, timeout=120)
    waited = call(socket, "Wait", task_pb2.WaitRequest(id=pod, exec_id=want.name), timeout=120)
    call(socket, "Delete", task_pb2.DeleteRequest(id=pod, exec_id=want.name), timeout=60)
    tally.record("late", want.name, waited.exit_status, want, out, err)


@contextlib.contextmanager
def cpu_hogs(seconds: float, nice: int) -> Iterator[None]:
    """One busy loop per CPU; each ends by itself after `seconds` and is killed on exit."""
    script = HOG.format(seconds=seconds, nice=nice)
    hogs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@dataclass(frozen=True)
class Sizes:
    execs: int
    runs: int
    late: int
    workers: int
    run_loops: int
    big_every: int
    late_delay: float
    hog_seconds: float
    hog_nice: int  # VM: the TCG vCPU threads are hogs already; ours only fill what is left


def stress(rig: KataRig, pod: str, sizes: Sizes) -> tuple[Tally, float]:
    tally = Tally()
    jobs = [job(i, rig.marker, sizes.big_every) for i in range(sizes.execs)]
    late = [job(10 * i, f"{rig.marker}L", sizes.big_every) for i in range(sizes.late)]
    began = time.monotonic()
    with (
        cpu_hogs(sizes.hog_seconds, sizes.hog_nice),
        ThreadPoolExecutor(sizes.workers + sizes.run_loops) as pool,
    ):
        loops = sizes.run_loops
        done = [
            pool.submit(_run_loop, rig, range(n, sizes.runs, loops), tally) for n in range(loops)
        ]
        done += [pool.submit(_exec, rig, pod, j, tally) for j in jobs]
        done += [pool.submit(_late_exec, rig, pod, j, sizes.late_delay, tally) for j in late]
        for future in done:
            future.result()
    return tally, time.monotonic() - began


def scaled(sizes: Sizes) -> Sizes:
    scale = float(os.environ.get("KATA_STRESS_SCALE", "1"))
    counts = {
        name: max(1, round(getattr(sizes, name) * scale)) for name in ("execs", "runs", "late")
    }
    return dataclasses.replace(sizes, **counts)


def check(kind: str, rig: KataRig, pod: str, sizes: Sizes) -> None:
    sizes = scaled(sizes)
    tally, wall = stress(rig, pod, sizes)
    numbers = {
        "sandbox": kind, "execs": tally.execs, "late_execs": tally.late, "runs": tally.runs,
        "lost": tally.lost, "failed": tally.failed, "wall_s": round(wall, 1),
    }  # fmt: skip
    print(f"stress: {json.dumps(numbers)}")
    assert tally.problems == [], "\n".join(tally.problems[:20])
    assert (tally.execs, tally.late, tally.runs) == (sizes.execs, sizes.late, sizes.runs)
    kill_and_remove(rig, pod)
    left = rig.wait_clean(30)
    assert not left, f"processes left behind: {left}"


LOCAL = Sizes(execs=2000, runs=100, late=40, workers=12, run_loops=3, big_every=100,
              late_delay=0.3, hog_seconds=600, hog_nice=0)  # fmt: skip
VM = Sizes(execs=300, runs=20, late=6, workers=4, run_loops=2, big_every=100,
           late_delay=1.0, hog_seconds=900, hog_nice=19)  # fmt: skip


def start_pod(rig: KataRig) -> str:
    """The pod the execs go to; it outlives any run of this suite (an hour)."""
    pod = rig.id("stress")
    result = rig.ctr(*rig.run_args(pod, rig.sh("sleep 3600"), "-d"), timeout=300)
    assert result.returncode == 0, _out(result)
    wait_status(rig, pod, "RUNNING", timeout=120)
    return pod


def test_local_sandbox_execs_and_runs_under_cpu_starvation(rig: KataRig) -> None:
    check("local", rig, start_pod(rig), LOCAL)


@pytest.fixture
def vm_rig(guest_image: Path) -> Iterator[KataRig]:
    keys = vm_keys(guest_image, initrd=True)
    with KataRig(hypervisor="qemu", hypervisor_keys=keys) as rig:
        yield rig


@pytest.mark.timeout(1500)
def test_vm_sandbox_execs_and_runs_under_cpu_starvation(vm_rig: KataRig) -> None:
    check("vm", vm_rig, start_pod(vm_rig), VM)
