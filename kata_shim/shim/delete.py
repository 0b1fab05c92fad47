"""The `delete` action: clean up after a shim containerd considers dead; print DeleteResponse.

containerd 1.6 runs it after EVERY task teardown (its ttrpc client closed) and
for bundles whose shim did not answer after a restart (contract §1.5). So it
is idempotent, bounded (containerd allows 5 s; < 4 s unless a hung shim must
be killed) and succeeds when nothing is left. Duties, for a task that owns its sandbox:
  1. the daemon in `shim.pid`, if it is really ours and does not exit on its own
     and does not answer Connect any more, is stopped (TERM, then KILL);
  2. the sandbox state dir (<state_dir>/<sandbox-id>): processes referencing it
     (local agent, hypervisor) are killed, runc containers a local agent left are
     force-deleted, a pod network's plumbing it recorded undone (the pod netns
     left as CNI made it), the host cgroups it recorded removed (sandbox_cgroup_only),
     mounts below it undone, the dir removed;
  3. a stale socket named in `address` is removed.
A pod container's delete never touches its (shared) sandbox. For every task:
`<bundle>/rootfs` is unmounted if mounted. Output: DeleteResponse{pid 0,
exit_status 137, exited_at now} on stdout; notes on stderr (containerd logs them).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from kata_shim.shim import procs
from kata_shim.shim.bundle import BundleError, annotations_of, sandbox_of, spec_of
from kata_shim.shim.flags import Flags
from kata_shim.shim.minipb import delete_response, options_config_path
from kata_shim.shim.paths import (
    ADDRESS_FILE,
    NETWORK_RECORD,
    OPTIONS_FILE,
    PID_FILE,
    STATE_ROOT_FILE,
    read_text,
    socket_path,
)

__all__ = ["delete", "response_bytes"]

SIGKILL_STATUS = 128 + 9
# a shim answers Shutdown at once and exits when its sandbox is torn down (a VM under TCG
# on a loaded host: 3 s and more); containerd allows `delete` 5 s in all. After
# QUICK_EXIT_WAIT one that still answers Connect is tearing down (or serves other tasks)
# and gets up to NATURAL_EXIT_WAIT in all; one that does not answer is hung and stopped.
QUICK_EXIT_WAIT = 1.0
NATURAL_EXIT_WAIT = 3.5
RUNC_TIMEOUT = 1.5


def response_bytes() -> bytes:
    return delete_response(0, SIGKILL_STATUS, time.time_ns())


def _note(message: str) -> None:
    sys.stderr.write(f"kata-shim delete: {message}\n")


def _placement(bundle: str, task_id: str) -> tuple[str, bool]:
    """(sandbox id, is a pod container); a bundle without a readable spec owns its sandbox."""
    try:
        where = sandbox_of(task_id, annotations_of(spec_of(bundle)))
    except BundleError:
        return task_id, False
    return where.sandbox_id, where.pod_container


def _state_root(bundle: str) -> str:
    """[runtime] state_dir the shim used: as its daemon recorded it, else from the configuration."""
    recorded = read_text(os.path.join(bundle, STATE_ROOT_FILE))
    if recorded and os.path.isabs(recorded):
        return recorded
    from kata_shim.config import ConfigError, load_config
    from kata_shim.config.schema import DEFAULT_STATE_DIR

    try:
        options = Path(bundle, OPTIONS_FILE).read_bytes()
    except OSError:
        options = b""
    try:
        return load_config(options_config_path(options)).runtime.state_dir
    except (ConfigError, ValueError) as exc:
        _note(f"configuration unusable ({exc}); assuming state dir {DEFAULT_STATE_DIR}")
        return DEFAULT_STATE_DIR


def _socket_of(bundle: str) -> str | None:
    address = read_text(os.path.join(bundle, ADDRESS_FILE))
    return socket_path(address) if address else None


def _shim_still_serving(bundle: str, task_id: str) -> bool:
    """Stop the recorded daemon unless it is alive and answering; True if it still serves."""
    text = read_text(os.path.join(bundle, PID_FILE)) or ""
    pid = int(text) if text.isdigit() else 0
    if not pid or not procs.is_our_shim(pid, task_id):
        return False
    if procs.wait_gone(pid, QUICK_EXIT_WAIT):
        return False
    path = _socket_of(bundle)
    if path is not None and procs.probe_connect(path, task_id) == pid:
        if procs.wait_gone(pid, NATURAL_EXIT_WAIT - QUICK_EXIT_WAIT):
            return False
        _note(f"shim {pid} still answers (other tasks, or a long sandbox teardown); leaving it")
        return True
    _note(f"stopping unresponsive shim {pid}")
    if not procs.stop_process(pid):
        _note(f"shim {pid} did not exit after SIGKILL")
    return False


def _delete_runc_leftovers(state_dir: Path) -> None:
    root = state_dir / "agent" / "runc"
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        _note(f"force-deleting leftover container {entry.name}")
        try:
            subprocess.run(
                ["runc", "--root", str(root), "delete", "--force", entry.name],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=RUNC_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _note(f"runc delete {entry.name}: {exc}")


def _restore_pod_network(state_dir: Path) -> None:
    path = state_dir / NETWORK_RECORD
    if not path.exists():
        return
    import json

    from kata_shim.network import record

    try:
        record.teardown_record(json.loads(path.read_text()))
        path.unlink()
        _note("pod network plumbing undone")
    except Exception as exc:
        _note(f"cannot undo the pod network plumbing in {path}: {exc}")


def _remove_host_cgroup(state_dir: Path) -> None:
    from kata_shim.sandbox import podcgroup

    deadline = time.monotonic() + 1.0  # killed processes leave their cgroup shortly after
    while (left := podcgroup.remove_recorded(state_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        _note(f"host cgroups still busy, left: {', '.join(map(str, left))}")


def _clean_state_dir(state_dir: Path) -> None:
    from kata_shim import mounts

    if not state_dir.exists():
        return
    leftovers = procs.pids_referencing(str(state_dir))
    if leftovers:
        _note(f"killing sandbox processes {leftovers}")
        procs.kill_processes(leftovers)
    _delete_runc_leftovers(state_dir)
    _restore_pod_network(state_dir)
    _remove_host_cgroup(state_dir)
    mounts.unmount_all_under(state_dir)
    try:
        mounts.remove_tree(state_dir)
    except OSError as exc:
        _note(f"cannot remove {state_dir}: {exc}")


def _remove_stale_socket(bundle: str) -> None:
    path = _socket_of(bundle)
    if path is None or not os.path.exists(path):
        return
    from kata_shim.shim.start import accepts_connections

    if not accepts_connections(path, timeout=0.2):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _unmount_rootfs(bundle: str) -> None:
    from kata_shim import mounts

    rootfs = Path(bundle, "rootfs")
    if rootfs.is_dir() and mounts.mount_points_under(rootfs):
        mounts.unmount_all_under(rootfs)


def delete(flags: Flags) -> bytes:
    """Run the cleanup (errors become notes); return the DeleteResponse bytes."""
    bundle = os.path.abspath(flags.bundle or os.getcwd())
    sandbox_id, pod_container = _placement(bundle, flags.id)
    if not pod_container and not _shim_still_serving(bundle, flags.id):
        _clean_state_dir(Path(_state_root(bundle)) / sandbox_id)
        _remove_stale_socket(bundle)
    _unmount_rootfs(bundle)
    return response_bytes()
