"""`isula pause/unpause`, `isula stats`, `isula top`, and RPCs lib-shim-v2 may send at odd times.

lib-shim-v2 has no RPC deadlines: every call below must come back (bounded here
by `bounded`), with an error where the task is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kata_shim.proto import cgroups_v1_pb2, task_pb2
from tests.isulad import libshimv2 as lib
from tests.isulad.rig import IsuladRig
from tests.isulad.ttrpc_sync import RpcError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = TypeVar("T")
NOT_FOUND, FAILED_PRECONDITION = 5, 9


def bounded(func: Callable[[], T], seconds: float = 20.0) -> T | BaseException:
    """Run a blocking lib-shim-v2 call; fail the test if it does not return in time."""
    result: list[T | BaseException] = []

    def run() -> None:
        try:
            result.append(func())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"{func} hung for {seconds}s (lib-shim-v2 would hang forever)"
    return result[0]


def code_of(outcome: object) -> int | None:
    return outcome.code if isinstance(outcome, RpcError) else None


def kernel_blkio(cid: str) -> tuple[int, int]:
    """(read, written) bytes the host kernel accounts to the container's blkio cgroup."""
    found = list(Path("/sys/fs/cgroup/blkio").glob(f"**/{cid}/{cid}"))
    assert len(found) == 1, found
    totals = {"Read": 0, "Write": 0}
    for name in ("blkio.io_service_bytes_recursive", "blkio.throttle.io_service_bytes_recursive"):
        path = found[0] / name
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[1] in totals:
                totals[parts[1]] += int(parts[2])
        if lines:
            break
    return totals["Read"], totals["Write"]


def test_pause_unpause_stats_top(rig: IsuladRig) -> None:
    cid = rig.id("ops")
    isulad = rig.isulad
    data = rig.work / "data"
    data.mkdir()
    script = (
        "dd if=/dev/zero of=/data/f bs=64k count=32 oflag=direct 2>/dev/null; "
        "dd if=/data/f of=/dev/null bs=64k iflag=direct 2>/dev/null; "
        "dd if=/dev/zero of=/data/cached bs=64k count=32 2>/dev/null; "  # page cache
        "echo io-done; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 600"
    )
    spec = rig.spec(script)
    spec["mounts"].append(
        {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "rw"]}
    )
    container = isulad.create(cid, spec)
    isulad.start(cid)

    isulad.pause(cid)
    assert isulad.state(cid).status == "paused"
    isulad.resume(cid)
    assert isulad.state(cid).status == "running"

    stats = isulad.stats(cid)  # the C API path: decode as v1 Metrics, copy into struct Stats
    assert stats.pids_current >= 1
    assert stats.cpu_use_nanos > 0 and stats.cpu_system_use <= stats.cpu_use_nanos
    assert stats.mem_used > 0 and stats.page_faults > 0
    deadline = time.monotonic() + 15
    while b"io-done" not in container.outputs["out"].data:
        assert time.monotonic() < deadline, "the dd runs did not finish"
        time.sleep(0.1)
    raw = lib._call(cid, "Stats", task_pb2.StatsRequest(id=cid), task_pb2.StatsResponse())
    assert isinstance(raw, task_pb2.StatsResponse)
    metrics = cgroups_v1_pb2.Metrics.FromString(raw.stats.value)
    sample = lib.decode_stats(raw.stats.value)
    assert metrics.memory.total_inactive_file == sample.inactive_file_total
    assert metrics.memory.swap.usage == sample.swap_used
    assert metrics.memory.rss == sample.rss_bytes and sample.rss_bytes > 0
    assert sample.inactive_file_total > 0 and sample.mem_used > sample.rss_bytes
    # what lib-shim-v2 can tell apart: "read" and everything else (counted as written)
    assert {e.op for e in metrics.blkio.io_service_bytes_recursive} <= {"read", "write"}
    kernel = kernel_blkio(cid)  # the local sandbox's container cgroup on this host
    assert (sample.blkio_read, sample.blkio_write) == kernel, metrics.blkio

    assert isulad.top(cid) == container.pid  # Pids()[0] is the sandbox pid
    assert isulad.stop(cid, timeout=1) == 137
    assert container.cleaned.wait(30)
    isulad.rm(cid)
    rig.assert_clean()


def test_rpcs_on_gone_or_unknown_tasks_return_errors(rig: IsuladRig) -> None:
    isulad = rig.new_isulad()
    isulad.auto_clean = False
    rig.isulad = isulad
    cid = rig.id("gone")
    other = rig.id("other")
    container = isulad.create(cid, rig.spec("sleep 600"))
    isulad.start(cid)
    # a second connection to the same shim, keyed by an id the shim never saw
    lib.shim_v2_new(other, (container.bundle / "address").read_text())
    for call in (
        lambda: lib.shim_v2_wait(other, None),
        lambda: lib.shim_v2_state(other),
        lambda: lib.shim_v2_kill(other, None, 9, False),
        lambda: lib.shim_v2_pids(other),
        lambda: lib.shim_v2_stats(other),
        lambda: lib.shim_v2_wait(cid, "no-such-exec"),
    ):
        assert code_of(bounded(call)) == NOT_FOUND
    # Shutdown while the task lives: OK, and the shim keeps serving it
    assert bounded(lambda: lib.shim_v2_shutdown(cid)) is None
    assert isulad.state(cid).status == "running"

    isulad.kill(cid, 9)
    assert container.exit_fifo is not None and container.exit_fifo.wait(30) == 137
    late = b'{"args":["true"]}'
    exec_late = bounded(lambda: lib.shim_v2_exec(cid, "late", False, "", "", "", late))
    assert code_of(exec_late) == FAILED_PRECONDITION  # no exec after the init's exit
    assert code_of(bounded(lambda: lib.shim_v2_start(cid, "late"))) == NOT_FOUND
    assert code_of(bounded(lambda: lib.shim_v2_pause(cid))) == FAILED_PRECONDITION
    stats = bounded(lambda: lib.shim_v2_stats(cid))
    assert not isinstance(stats, lib.ShimPanic), stats
    assert bounded(lambda: lib.shim_v2_pids(cid)) == container.pid
    assert bounded(lambda: lib.shim_v2_wait(cid, None)) == 137
    deleted = bounded(lambda: lib.shim_v2_delete(cid, None))
    assert isinstance(deleted, lib.DeleteResponse) and deleted.exit_status == 137
    # after Delete the task is unknown: NotFound, never a hang
    for call in (
        lambda: lib.shim_v2_wait(cid, None),
        lambda: lib.shim_v2_state(cid),
        lambda: lib.shim_v2_delete(cid, None),
        lambda: lib.shim_v2_kill(cid, None, 0, False),
    ):
        assert code_of(bounded(call)) == NOT_FOUND
    assert bounded(lambda: lib.shim_v2_shutdown(cid)) is None
    isulad.clean(cid)  # what iSulad would do next: the probe fails, Delete/Shutdown only warn
    isulad.rm(cid)
    lib.shim_v2_close(other)
    rig.assert_clean()
