"""Containers in a QEMU VM (TCG) driven by a real containerd through our shim.

run + exit code (proving the guest kernel ran it), a volume and exact stdout, exec,
kill, a two-container
pod in one VM, and `kill -9` of QEMU: every task ends with 255, Delete still
works and nothing (QEMU, shim, agent, sockets, mounts) is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from kata_shim.devenv.shim import KataRig
from tests.fakes.vmkeys import vm_keys
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"


@pytest.fixture(params=["virtio-9p", "virtio-fs"])
def vm_rig(guest_image, request: pytest.FixtureRequest) -> Iterator[KataRig]:
    """A private containerd with the QEMU sandbox, sharing over 9p or virtio-fs (issue 17:
    volumes, exec, kill and a QEMU SIGKILL, which must end virtiofsd too: assert_clean)."""
    keys = {**vm_keys(guest_image), "shared_fs": request.param}
    with KataRig(hypervisor="qemu", hypervisor_keys=keys) as rig:
        yield rig


def qemu_processes(rig: KataRig) -> list[int]:
    return [pid for pid, argv in rig.leftovers() if "qemu-system" in argv]


def mounts_of(rig: KataRig) -> list[str]:
    mountinfo = Path("/proc/self/mountinfo").read_text()
    return [line for line in mountinfo.splitlines() if str(rig.work) in line]


def exit_statuses(lines: str) -> dict[str, int]:
    """container id → exit_status of its init's /tasks/exit event, from `ctr events` output."""
    found = {}
    for line in lines.splitlines():
        if "/tasks/exit" in line:
            event = json.loads(line[line.index("{") :])
            if event.get("id") == event.get("container_id"):
                found[event["container_id"]] = event.get("exit_status", 0)
    return found


def kill_and_collect_exits(rig: KataRig, pid: int, tasks: Sequence[str]) -> dict[str, int]:
    """SIGKILL `pid` (a sandbox's QEMU) while `ctr events` runs; wait until every one of
    `tasks` is STOPPED; the exit statuses the events reported (exit_statuses)."""
    events = rig.containerd.popen_ctr("events")
    try:
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        for task in tasks:
            wait_status(rig, task, "STOPPED", timeout=60)
        time.sleep(1.0)
    finally:
        events.kill()
        out, _ = events.communicate()
    return exit_statuses(out.decode(errors="replace"))


def run_detached(rig: KataRig, task_id: str, annotations: dict[str, str] | None = None) -> None:
    spec = rig.spec_file(task_id, rig.sh("sleep 600"), annotations=annotations or {})
    result = rig.ctr(*rig.run_spec_args(task_id, spec, "-d"), timeout=180)
    assert result.returncode == 0, _out(result) + rig.containerd.log_tail()
    wait_status(rig, task_id, "RUNNING", timeout=60)


def test_run_exit_code_and_guest_kernel(vm_rig: KataRig) -> None:
    task = vm_rig.id("run")
    result = vm_rig.ctr(
        *vm_rig.run_args(
            task, vm_rig.sh("uname -r; grep -m1 'model name' /proc/cpuinfo; exit 7"), "--rm"
        ),
        timeout=180,
    )
    out = result.stdout.decode()
    assert result.returncode == 7, _out(result)
    assert out.splitlines()[0] != os.uname().release, out
    assert "QEMU" in out
    assert_clean(vm_rig)
    assert not mounts_of(vm_rig)


def test_volume_and_exact_stdout_in_the_vm(vm_rig: KataRig) -> None:
    """A host directory bind-mounted into the container crosses the VM boundary (9p share,
    rewritten spec) read-write, and 32 MiB of random stdout arrive with the same sha256."""
    volume = vm_rig.work / "volume"
    volume.mkdir()
    (volume / "in.txt").write_text("from the host\n")
    task = vm_rig.id("vol")
    script = (
        "cat /data/in.txt; uname -r > /data/out.txt; "
        "dd if=/dev/urandom iflag=fullblock bs=1048576 count=32 2>/dev/null | tee /data/blob"
    )
    mount = f"type=bind,src={volume},dst=/data,options=rbind:rw"
    args = vm_rig.run_args(task, ["/bin/sh", "-c", script], "--rm", "--mount", mount)
    result = vm_rig.ctr(*args, timeout=180)
    assert result.returncode == 0, _out(result) + vm_rig.containerd.log_tail()
    head = b"from the host\n"
    assert result.stdout.startswith(head), result.stdout[:200]
    blob = (volume / "blob").read_bytes()
    assert len(blob) == 32 << 20
    assert hashlib.sha256(result.stdout[len(head) :]).digest() == hashlib.sha256(blob).digest()
    assert (volume / "out.txt").read_text().strip() != os.uname().release  # the guest kernel
    assert_clean(vm_rig)
    assert not mounts_of(vm_rig)


def test_exec_and_kill_in_the_vm(vm_rig: KataRig) -> None:
    task = vm_rig.id("exec")
    run_detached(vm_rig, task)
    assert len(qemu_processes(vm_rig)) == 1
    execd = vm_rig.ctr(
        "task", "exec", "--exec-id", "e1", task, *vm_rig.sh("uname -r; exit 3"), timeout=120
    )
    assert execd.returncode == 3 and execd.stdout.decode().strip() != os.uname().release, _out(
        execd
    )
    vm_rig.ctr("task", "kill", "-s", "SIGKILL", task)
    line = wait_status(vm_rig, task, "STOPPED", timeout=60)
    remove(vm_rig, task)
    assert_clean(vm_rig)
    assert not mounts_of(vm_rig), line


def test_pod_of_two_containers_in_one_vm_and_qemu_kill(vm_rig: KataRig) -> None:
    sandbox, app = vm_rig.id("sandbox"), vm_rig.id("app")
    run_detached(vm_rig, sandbox, {CRI_TYPE: "sandbox", CRI_SANDBOX: sandbox})
    run_detached(vm_rig, app, {CRI_TYPE: "container", CRI_SANDBOX: sandbox})
    qemus = qemu_processes(vm_rig)
    assert len(qemus) == 1, vm_rig.leftovers()
    statuses = kill_and_collect_exits(vm_rig, qemus[0], (app, sandbox))
    assert statuses.get(app) == 255 and statuses.get(sandbox) == 255, statuses
    for task in (app, sandbox):
        deleted = vm_rig.ctr("task", "delete", task, timeout=60)
        assert deleted.returncode == 0, _out(deleted)
        vm_rig.ctr("container", "delete", task)
    assert_clean(vm_rig)
    assert not mounts_of(vm_rig)


@pytest.fixture
def libvirt_rig(guest_image) -> Iterator[KataRig]:
    import shutil

    from kata_shim.devenv.libvirtd import LibvirtDaemons

    daemons = LibvirtDaemons()
    daemons.start()
    keys = vm_keys(guest_image)  # the default design: the root image
    try:
        with KataRig(hypervisor="libvirt", hypervisor_keys=keys) as rig:
            yield rig
    finally:
        daemons.stop()
        shutil.rmtree(daemons.work, ignore_errors=True)


def test_libvirt_backend_smoke(libvirt_rig: KataRig) -> None:
    task = libvirt_rig.id("lv")
    result = libvirt_rig.ctr(
        *libvirt_rig.run_args(task, libvirt_rig.sh("uname -r; exit 4"), "--rm"), timeout=240
    )
    assert result.returncode == 4, _out(result) + libvirt_rig.containerd.log_tail()
    assert result.stdout.decode().split()[0] != os.uname().release
    assert_clean(libvirt_rig)
    assert not mounts_of(libvirt_rig)
