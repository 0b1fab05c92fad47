"""Pod semantics in the VM through a real containerd: the containers of one VM pod share
the pod's /dev/shm, its IPC and UTS namespaces (the hostname is the pod's: the sandbox
container's spec hostname, also for a container without one), and its PID namespace
when their spec's pid entry names a path (as containerd's CRI writes for
`namespace_options.pid = POD`)."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from kata_shim.devenv.shim import KataRig
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status
from tests.integration.test_vm_containerd import (
    CRI_SANDBOX,
    CRI_TYPE,
    mounts_of,
    vm_rig,
)

__all__ = ["vm_rig"]  # the fixture, shared with test_vm_containerd

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def run_pod_container(
    rig: KataRig,
    task_id: str,
    sandbox: str,
    hostname: str | None,
    *,
    script: str = "sleep 600",
    pid_path: str | None = None,
) -> None:
    """`script` (a sleeper) in pod `sandbox` (its sandbox container when task_id ==
    sandbox); the spec's `hostname` is set to `hostname`, or removed when None; its pid
    namespace entry names `pid_path` when given."""
    kind = "sandbox" if task_id == sandbox else "container"
    path = rig.spec_file(
        task_id, rig.sh(script), annotations={CRI_TYPE: kind, CRI_SANDBOX: sandbox}
    )
    spec = json.loads(path.read_text())
    spec.pop("hostname", None)
    if hostname is not None:
        spec["hostname"] = hostname
    for ns in spec["linux"]["namespaces"]:
        if ns["type"] == "pid" and pid_path is not None:
            ns["path"] = pid_path
    path.write_text(json.dumps(spec))
    result = rig.ctr(*rig.run_spec_args(task_id, path, "-d"), timeout=180)
    assert result.returncode == 0, _out(result) + rig.containerd.log_tail()
    wait_status(rig, task_id, "RUNNING", timeout=60)


def exec_in(rig: KataRig, task_id: str, exec_id: str, script: str) -> str:
    result = rig.ctr("task", "exec", "--exec-id", exec_id, task_id, *rig.sh(script), timeout=120)
    assert result.returncode == 0, _out(result)
    return result.stdout.decode()


def test_pod_shares_dev_shm_and_hostname(vm_rig: KataRig) -> None:
    sandbox, app = vm_rig.id("pod-sb"), vm_rig.id("pod-app")
    hostname = f"pod-{secrets.token_hex(4)}"
    run_pod_container(vm_rig, sandbox, sandbox, hostname)
    run_pod_container(vm_rig, app, sandbox, None)  # inherits the guest's hostname
    written = exec_in(vm_rig, sandbox, "w", f"echo {hostname}-shm > /dev/shm/x; hostname")
    assert written.split() == [hostname], written
    read = exec_in(vm_rig, app, "r", "cat /dev/shm/x; hostname; grep ' /dev/shm ' /proc/mounts")
    lines = read.splitlines()
    assert lines[:2] == [f"{hostname}-shm", hostname], read
    assert "tmpfs" in lines[2] and "size=65536k" in lines[2], read
    for task in (app, sandbox):
        vm_rig.ctr("task", "kill", "-s", "SIGKILL", task)
        wait_status(vm_rig, task, "STOPPED", timeout=60)
        remove(vm_rig, task)
    assert_clean(vm_rig)
    assert not mounts_of(vm_rig)


def log_until_seen(rig: KataRig, task_id: str, token: str) -> None:
    """`logger token` until the task's own `logread` shows it (its syslogd has started)."""
    for attempt in range(60):
        if token in exec_in(rig, task_id, f"log{attempt}", f"logger {token}; logread"):
            return
        time.sleep(1)
    pytest.fail(f"{task_id}: syslogd never logged {token}")


def test_pod_shares_ipc_uts_and_pid_on_request(vm_rig: KataRig) -> None:
    """Container 1 (the sandbox container) logs into busybox syslogd's SysV shm ring buffer;
    `logread` (same IPC key) in the others shows it only through a shared IPC namespace.
    `shared` names a pid namespace path (CRI's pid=POD): it sees container 1's processes,
    with container 1's init as PID 1; `own` (no path, pid=CONTAINER) sees only its own."""
    sandbox, shared, own = vm_rig.id("ns-sb"), vm_rig.id("ns-shared"), vm_rig.id("ns-own")
    hostname, token = f"pod-{secrets.token_hex(4)}", f"podns-{secrets.token_hex(4)}"
    maker = f": {token}-maker; syslogd -n -C64 & sleep 600"
    run_pod_container(vm_rig, sandbox, sandbox, hostname, script=maker)
    # any host path: only its presence matters (it names nothing in the VM)
    run_pod_container(vm_rig, shared, sandbox, None, pid_path="/proc/1/ns/pid")
    run_pod_container(vm_rig, own, sandbox, None)
    log_until_seen(vm_rig, sandbox, token)
    probe = "logread; hostname; readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts"
    pid1 = "tr '\\0' ' ' < /proc/1/cmdline; echo; ps -o pid,args"
    seen = {task: exec_in(vm_rig, task, "probe", probe) for task in (sandbox, shared, own)}
    for task, out in seen.items():
        assert token in out, (task, out)
        assert out.splitlines()[-3:] == seen[sandbox].splitlines()[-3:], (task, out)
        assert out.splitlines()[-3] == hostname, (task, out)
    pod_ps = exec_in(vm_rig, shared, "ps", pid1)
    assert pod_ps.splitlines()[0].startswith(f"/bin/sh -c {maker}"), pod_ps
    processes = pod_ps.splitlines()[1:]
    assert any(f"{token}-maker" in line for line in processes), pod_ps
    assert any("syslogd -n -C64" in line for line in processes), pod_ps
    own_ps = exec_in(vm_rig, own, "ps", pid1)
    assert own_ps.splitlines()[0].startswith("/bin/sh -c sleep 600"), own_ps
    assert token not in own_ps, own_ps
    for task in (own, shared, sandbox):
        vm_rig.ctr("task", "kill", "-s", "SIGKILL", task)
        wait_status(vm_rig, task, "STOPPED", timeout=60)
        remove(vm_rig, task)
    assert_clean(vm_rig)
    assert not mounts_of(vm_rig)
