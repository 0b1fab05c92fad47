"""An emulation of lib-shim-v2 (openeuler-mirror/lib-shim-v2 src/lib.rs + src/client/client.rs).

The C API iSulad calls, one function per `shim_v2_*` export, keyed by container
id in a global map guarded by a mutex. Each puts on the wire exactly the fields
the Rust client sets (isulad-openeuler.md §1.2), with no deadline:
  * Create: id, bundle, terminal, stdio — no rootfs mounts, no options;
  * Kill: id, signal, all — never exec_id;
  * State, Pids, Stats, Pause, Resume, Shutdown: id only;
  * Exec: the spec JSON in an Any with the runtime-spec Process type URL;
  * Stats: the Any's value decoded as cgroups v1 Metrics WITHOUT looking at
    the type URL (a decode failure is a Rust panic: `ShimPanic`), copied into
    the C `Stats` struct field by field (blkio op "read" vs everything else);
  * Pids: `processes[0]` (an empty list is an index panic: `ShimPanic`).
Where the C API returns -1 we raise `RpcError` (or `ShimV2Error` for local failures).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError, Message

from kata_shim.proto import cgroups_v1_pb2, task_pb2
from tests.isulad.ttrpc_sync import SyncClient, connect

__all__ = [
    "PROCESS_TYPE_URL",
    "DeleteResponse",
    "ShimPanic",
    "ShimV2Error",
    "State",
    "Stats",
    "shim_v2_close",
    "shim_v2_create",
    "shim_v2_delete",
    "shim_v2_exec",
    "shim_v2_kill",
    "shim_v2_new",
    "shim_v2_pause",
    "shim_v2_pids",
    "shim_v2_resize_pty",
    "shim_v2_resume",
    "shim_v2_shutdown",
    "shim_v2_start",
    "shim_v2_state",
    "shim_v2_stats",
    "shim_v2_wait",
]

SERVICE = "containerd.task.v2.Task"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
# lib-shim-v2's Status mapping: anything else is Unknown
STATUS_NAMES = {1: "created", 2: "running", 3: "stopped", 4: "paused", 5: "pausing"}

_clients: dict[str, SyncClient] = {}
_stale: list[SyncClient] = []  # replaced entries: iSulad leaks them; we close them at the end
_clients_lock = threading.Lock()


class ShimV2Error(RuntimeError):
    """A local failure lib-shim-v2 reports as -1 (no connection, empty parameter)."""


class ShimPanic(RuntimeError):
    """What would be a Rust panic inside an `extern "C"` call: iSulad would abort."""


@dataclass
class DeleteResponse:
    exit_status: int
    pid: int


@dataclass
class State:
    id: str
    pid: int
    status: str
    stdin: str
    stdout: str
    stderr: str
    terminal: bool
    exit_status: int


@dataclass
class Stats:
    """shim_v2.h `struct Stats`, filled the way `Stats::copy` does."""

    pids_current: int = 0
    cpu_use_nanos: int = 0
    cpu_system_use: int = 0
    blkio_read: int = 0
    blkio_write: int = 0
    mem_used: int = 0
    mem_limit: int = 0
    rss_bytes: int = 0
    page_faults: int = 0
    major_page_faults: int = 0
    kmem_used: int = 0
    kmem_limit: int = 0
    inactive_file_total: int = 0
    swap_used: int = 0
    swap_limit: int = 0


def _conn(container_id: str) -> SyncClient:
    with _clients_lock:
        client = _clients.get(container_id)
    if client is None:
        raise ShimV2Error("connection has not been established...")
    return client


def _call(container_id: str, method: str, request: Message, reply: Message) -> Message:
    return _conn(container_id).call(SERVICE, method, request, reply)


def shim_v2_new(container_id: str, address: str) -> None:
    client = SyncClient(connect(address))
    with _clients_lock:
        old = _clients.get(container_id)
        if old is not None:
            _stale.append(old)
        _clients[container_id] = client  # a stale entry is simply overwritten (iSulad)


def shim_v2_close(container_id: str) -> None:
    """Never called by iSulad; the emulation uses it to drop a connection (client restart)."""
    with _clients_lock:
        client = _clients.pop(container_id, None)
    if client is not None:
        client.close()


def close_stale() -> None:
    """Close the connections shim_v2_new replaced (not part of the C API)."""
    with _clients_lock:
        stale, _stale[:] = list(_stale), []
    for client in stale:
        client.close()


def shim_v2_create(
    container_id: str, bundle: str, terminal: bool, stdin: str, stdout: str, stderr: str
) -> int:
    if not bundle:
        raise ShimV2Error("parameter must not be empty!")
    request = task_pb2.CreateTaskRequest(
        id=container_id,
        bundle=bundle,
        terminal=terminal,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    reply = _call(container_id, "Create", request, task_pb2.CreateTaskResponse())
    return int(reply.pid)  # type: ignore[attr-defined]


def shim_v2_start(container_id: str, exec_id: str | None) -> int:
    request = task_pb2.StartRequest(id=container_id, exec_id=exec_id or "")
    reply = _call(container_id, "Start", request, task_pb2.StartResponse())
    return int(reply.pid)  # type: ignore[attr-defined]


def shim_v2_kill(container_id: str, exec_id: str | None, signal: int, all_: bool) -> None:
    del exec_id  # taken by the C API, never transmitted
    request = task_pb2.KillRequest(id=container_id, signal=signal, all=all_)
    _call(container_id, "Kill", request, _empty())


def shim_v2_delete(container_id: str, exec_id: str | None) -> DeleteResponse:
    request = task_pb2.DeleteRequest(id=container_id, exec_id=exec_id or "")
    reply = _call(container_id, "Delete", request, task_pb2.DeleteResponse())
    return DeleteResponse(reply.exit_status, reply.pid)  # type: ignore[attr-defined]


def shim_v2_shutdown(container_id: str) -> None:
    request = task_pb2.ShutdownRequest(id=container_id)
    _call(container_id, "Shutdown", request, _empty())


def shim_v2_exec(
    container_id: str,
    exec_id: str,
    terminal: bool,
    stdin: str,
    stdout: str,
    stderr: str,
    spec_json: bytes,
) -> None:
    if not exec_id:
        raise ShimV2Error("parameter must not be empty!")
    request = task_pb2.ExecProcessRequest(
        id=container_id,
        exec_id=exec_id,
        terminal=terminal,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
    )
    request.spec.type_url = PROCESS_TYPE_URL
    request.spec.value = spec_json
    _call(container_id, "Exec", request, _empty())


def shim_v2_resize_pty(container_id: str, exec_id: str | None, height: int, width: int) -> None:
    request = task_pb2.ResizePtyRequest(
        id=container_id, exec_id=exec_id or "", height=height, width=width
    )
    _call(container_id, "ResizePty", request, _empty())


def shim_v2_pause(container_id: str) -> None:
    _call(container_id, "Pause", task_pb2.PauseRequest(id=container_id), _empty())


def shim_v2_resume(container_id: str) -> None:
    _call(container_id, "Resume", task_pb2.ResumeRequest(id=container_id), _empty())


def shim_v2_state(container_id: str) -> State:
    reply = _call(
        container_id, "State", task_pb2.StateRequest(id=container_id), task_pb2.StateResponse()
    )
    assert isinstance(reply, task_pb2.StateResponse)
    return State(
        id=container_id,
        pid=reply.pid,
        status=STATUS_NAMES.get(reply.status, "unknown"),
        stdin=reply.stdin,
        stdout=reply.stdout,
        stderr=reply.stderr,
        terminal=reply.terminal,
        exit_status=reply.exit_status,
    )


def decode_stats(value: bytes) -> Stats:
    """`Metrics::merge_from(any.value).unwrap()` then `Stats::copy`."""
    metrics = cgroups_v1_pb2.Metrics()
    try:
        metrics.MergeFromString(value)
    except DecodeError as exc:
        raise ShimPanic(f"called `Result::unwrap()` on an `Err` value: {exc}") from exc
    out = Stats(
        pids_current=metrics.pids.current,
        cpu_use_nanos=metrics.cpu.usage.total,
        cpu_system_use=metrics.cpu.usage.kernel,
        mem_used=metrics.memory.usage.usage,
        mem_limit=metrics.memory.usage.limit,
        rss_bytes=metrics.memory.rss,
        page_faults=metrics.memory.pg_fault,
        major_page_faults=metrics.memory.pg_maj_fault,
        kmem_used=metrics.memory.kernel.usage,
        kmem_limit=metrics.memory.kernel.limit,
        inactive_file_total=metrics.memory.total_inactive_file,
        swap_limit=metrics.memory.swap.limit,
        swap_used=metrics.memory.swap.usage,
    )
    for entry in metrics.blkio.io_service_bytes_recursive:
        if entry.op == "read":
            out.blkio_read += entry.value
        else:
            out.blkio_write += entry.value
    return out


def shim_v2_stats(container_id: str) -> Stats:
    reply = _call(
        container_id, "Stats", task_pb2.StatsRequest(id=container_id), task_pb2.StatsResponse()
    )
    assert isinstance(reply, task_pb2.StatsResponse)
    return decode_stats(reply.stats.value if reply.HasField("stats") else b"")


def shim_v2_pids(container_id: str) -> int:
    reply = _call(
        container_id, "Pids", task_pb2.PidsRequest(id=container_id), task_pb2.PidsResponse()
    )
    assert isinstance(reply, task_pb2.PidsResponse)
    if not reply.processes:
        raise ShimPanic("index out of bounds: the len is 0 but the index is 0")
    return int(reply.processes[0].pid)


def shim_v2_wait(container_id: str, exec_id: str | None) -> int:
    request = task_pb2.WaitRequest(id=container_id, exec_id=exec_id or "")
    reply = _call(container_id, "Wait", request, task_pb2.WaitResponse())
    status = int(reply.exit_status)  # type: ignore[attr-defined]
    return status - (1 << 32) if status >= 1 << 31 else status  # `as i32`


def _empty() -> Message:
    return empty_pb2.Empty()
