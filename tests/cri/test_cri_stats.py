"""Host cgroups, stats and resource updates through containerd's real CRI plugin.

The rig's kata handlers run with `[runtime] sandbox_cgroup_only = true` (Kata's
Kubernetes setup). For a pod whose PodSandboxConfig names a `cgroup_parent`:
  * the shim and the sandbox (QEMU, or the local agent) run in the pod's host
    cgroup (read from cgroup.procs and /proc/<pid>/cgroup, every hierarchy);
  * where containers are host processes (`runc`, `kata-local`), each one's
    processes are in `<cgroup_parent>/<container id>` in every resource
    controller, inside the pod cgroup, so PodSandboxStats and the pod's limits
    (kubelet's) cover them too;
  * PodSandboxStats (containerd loads `cgroup_parent` itself on this cgroup-v1
    host) and ContainerStats (our Stats, decoded by containerd) show memory;
  * UpdateContainerResources changes the memory limit the container reads back
    from its own cgroup (in the guest for the VM);
  * teardown removes the cgroups the shim made; a pod cgroup made beforehand (as
    kubelet does, with a memory limit that then bounds the VM) stays.
Both cgroup path forms: cgroupfs (`/podcg-<hex>`; CRI gives the sandbox
`<parent>/<id>`) and systemd (`/podcg.slice/podcg-<hex>.slice`; CRI gives
`podcg-<hex>.slice:cri-containerd:<id>`). `runc` runs the cgroupfs scenario as
the reference (its systemd form needs SystemdCgroup, which this host lacks).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.cgroupfs import cgroup_mounts, remove_tree
from kata_shim.devenv.cri import CriRig
from kata_shim.devenv.criclient import CriClient
from kata_shim.proto import cri_pb2
from kata_shim.sandbox.podcgroup import HostPaths, PodCgroup, host_paths
from tests.cri.conftest import check_tools
from tests.cri.podkit import Pod, leftovers

pytestmark = [pytest.mark.integration]

MOUNTS = cgroup_mounts(Path("/proc/self/mountinfo").read_text())
MEMORY = MOUNTS["memory"]
LIMIT = 200 * 1024 * 1024  # UpdateContainerResources' memory limit
RESOURCE_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio", "cpuset")
KUBELET_LIMIT = 6 * 1024**3  # the pod cgroup's limit in the "kubelet made it" scenario
# allocates a little, then waits; TERM ends it
BUSY = "trap 'exit 0' TERM; x=$(head -c 2000000 /dev/zero | tr '\\0' a); while :; do sleep 1; done"
READ_LIMIT = (
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
)


def cgroup_parent(form: str) -> str:
    tag = uuid.uuid4().hex[:8]
    return f"/podcg-{tag}" if form == "cgroupfs" else f"/podcg.slice/podcg-{tag}.slice"


def sandbox_cgroups_path(parent: str, sandbox_id: str) -> str:
    """The sandbox spec's cgroupsPath as containerd 1.6's CRI derives it (getCgroupsPath)."""
    base = posixpath.basename(parent)
    if base.endswith(".slice"):
        return f"{base}:cri-containerd:{sandbox_id}"
    return posixpath.join(parent, sandbox_id)


def existing(path: str) -> list[Path]:
    return [
        root / path.lstrip("/")
        for root in set(MOUNTS.values())
        if (root / path.lstrip("/")).exists()
    ]


def procs(path: str) -> list[int]:
    return [int(p) for p in (MEMORY / path.lstrip("/") / "cgroup.procs").read_text().split()]


def argv(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def cgroups_of(pid: int) -> set[str]:
    """The cgroup paths of `pid` across all hierarchies."""
    return {line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()}


def check_stats(client: CriClient, pod_id: str, container: str) -> None:
    stats = client.container_stats(container)
    memory, cpu = stats.memory, stats.cpu
    assert stats.attributes.id == container
    assert memory.usage_bytes.value > 0 and memory.working_set_bytes.value > 0, stats
    assert cpu.usage_core_nano_seconds.value > 0, stats
    pod = client.pod_stats(pod_id)
    assert pod.attributes.id == pod_id
    assert pod.linux.memory.usage_bytes.value > 0, pod
    assert pod.linux.memory.working_set_bytes.value > 0, pod
    assert pod.linux.cpu.usage_core_nano_seconds.value > 0, pod
    listed = {c.attributes.id: c for c in pod.linux.containers}
    assert listed[container].memory.usage_bytes.value > 0, pod
    pod_memory = pod.linux.memory
    print(
        f"ContainerStats memory usage {memory.usage_bytes.value} working set "
        f"{memory.working_set_bytes.value}; PodSandboxStats memory usage "
        f"{pod_memory.usage_bytes.value} working set {pod_memory.working_set_bytes.value}"
    )


def check_update(client: CriClient, container: str) -> None:
    before = client.exec_sync(container, ["/bin/sh", "-c", READ_LIMIT])
    assert before.exit_code == 0, before
    resources = cri_pb2.LinuxContainerResources(memory_limit_in_bytes=LIMIT)
    client.update_container_resources(container, resources)
    after = client.exec_sync(container, ["/bin/sh", "-c", READ_LIMIT])
    assert after.exit_code == 0, after
    assert int(after.stdout) == LIMIT != int(before.stdout.strip() or 0), (before, after)
    print(f"memory limit read in the container: {int(before.stdout)} -> {int(after.stdout)}")


def check_host_cgroup(pod: Pod, parent: str, vm: bool) -> str:
    """The shim and the sandbox's processes are in the pod's sandbox cgroup; returns it."""
    sandbox = host_paths(sandbox_cgroups_path(parent, pod.id), pod.id).sandbox
    assert posixpath.dirname(sandbox) == parent
    members = {pid: argv(pid) for pid in procs(sandbox)}
    shims = [p for p, a in members.items() if "containerd-shim-kata-v2" in a and pod.id in a]
    assert len(shims) == 1, members
    if vm:
        assert any("qemu-system" in a for a in members.values()), members
    else:
        assert len(members) >= 2, members  # the shim and the local agent
    for pid in members:
        assert cgroups_of(pid) == {sandbox}, (pid, members[pid], cgroups_of(pid))
    print(f"{sandbox}: {sorted(members.items())}")
    return sandbox


def check_container_cgroup(parent: str, container: str, kubelet: bool) -> None:
    """The container's processes (BUSY's shell) are in `<parent>/<container>` in every
    resource controller; with kubelet's pod cgroup its memory limit bounds them."""
    path = posixpath.join(parent, container)
    members, where = {}, {}
    for pid in procs(path):
        with contextlib.suppress(FileNotFoundError):  # BUSY's `sleep 1` may end meanwhile
            found = argv(pid), controllers_of(pid)
            if not exiting(pid):  # checked after the read: an exited `sleep` reads as "/"
                members[pid], where[pid] = found
    assert any(a.startswith("/bin/sh -c trap") for a in members.values()), members
    for pid, controllers in where.items():
        for name in RESOURCE_CONTROLLERS:
            assert controllers[name] == path, (pid, members[pid], controllers)
    if kubelet:
        stat = (MEMORY / path.lstrip("/") / "memory.stat").read_text().split()
        assert int(stat[stat.index("hierarchical_memory_limit") + 1]) == KUBELET_LIMIT
    print(f"{path}: {sorted(members.items())}")


def exiting(pid: int) -> bool:
    """A zombie (or dying) process: its v1 cgroups already read as "/"."""
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state in ("Z", "X")


def controllers_of(pid: int) -> dict[str, str]:
    """Controller name → `pid`'s cgroup path in that hierarchy (/proc/<pid>/cgroup)."""
    controllers = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, where = line.split(":", 2)
        controllers.update(dict.fromkeys(names.split(","), where))
    return controllers


def kubelet_pod_cgroup(parent: str, limit: int) -> None:
    """What kubelet does before RunPodSandbox: the pod cgroup, with a memory limit."""
    PodCgroup(HostPaths(parent, parent)).create()
    (MEMORY / parent.lstrip("/") / "memory.limit_in_bytes").write_text(str(limit))


def scenario(rig: CriRig, client: CriClient, handler: str, form: str, kubelet: bool) -> None:
    parent = cgroup_parent(form)
    top = "/" + parent.strip("/").split("/")[0]
    try:
        if kubelet:
            kubelet_pod_cgroup(parent, KUBELET_LIMIT)
        pod = Pod(rig, client, handler, "stats", cgroup_parent=parent)
        try:
            container, sandbox = check_pod(client, pod, handler, parent, kubelet)
        except BaseException:
            pod.teardown_quietly()  # a failed scenario must not leave its pod to the next one
            raise
        pod.teardown()
        assert leftovers(rig, client, [pod.id, container], timeout=30) == {}
        if handler != "runc":
            assert existing(sandbox) == []
            assert bool(existing(parent)) == kubelet  # ours removed; kubelet's kept
    finally:
        remove_tree(top)
    assert existing(top) == []


def check_pod(
    client: CriClient, pod: Pod, handler: str, parent: str, kubelet: bool
) -> tuple[str, str]:
    """A running container's stats, host cgroups and update: (container id, sandbox cgroup)."""
    container = pod.add("busy", BUSY)
    running = client.wait_container_state(container, cri_pb2.CONTAINER_RUNNING)
    assert running.state == cri_pb2.CONTAINER_RUNNING
    check_stats(client, pod.id, container)
    if handler != "kata":  # its containers are in the VM, its cgroups the guest's
        check_container_cgroup(parent, container, kubelet)
    sandbox = ""
    if handler == "runc":
        assert procs(posixpath.join(parent, pod.id))  # the pause process, runc's way
    else:
        sandbox = check_host_cgroup(pod, parent, vm=handler == "kata")
    if kubelet:
        stat = (MEMORY / sandbox.lstrip("/") / "memory.stat").read_text().split()
        limit = int(stat[stat.index("hierarchical_memory_limit") + 1])
        assert limit == KUBELET_LIMIT  # the pod's limit bounds the whole sandbox
    check_update(client, container)
    return container, sandbox


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("handler", "form", "kubelet"),
    [
        ("runc", "cgroupfs", False),
        ("kata-local", "cgroupfs", False),
        ("kata-local", "cgroupfs", True),
        ("kata-local", "systemd", True),
    ],
)
def test_pod_cgroup_stats_and_update(
    cri_rig: CriRig, cri_client: CriClient, handler: str, form: str, kubelet: bool
) -> None:
    scenario(cri_rig, cri_client, handler, form, kubelet)


@pytest.fixture(scope="module")
def vm_cri_rig(guest_image: Path) -> Iterator[CriRig]:
    check_tools()
    with CriRig(guest_image=guest_image) as rig:
        yield rig


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize(("form", "kubelet"), [("cgroupfs", False), ("systemd", True)])
def test_vm_pod_cgroup_stats_and_update(vm_cri_rig: CriRig, form: str, kubelet: bool) -> None:
    with CriClient(vm_cri_rig.cri_address) as client:
        scenario(vm_cri_rig, client, "kata", form, kubelet)


@pytest.mark.timeout(180)
def test_crashed_shim_cgroup_removed_by_delete(cri_rig: CriRig, cri_client: CriClient) -> None:
    """SIGKILL the shim: containerd's `delete` removes the cgroups it recorded."""
    parent = cgroup_parent("cgroupfs")
    try:
        pod = Pod(cri_rig, cri_client, "kata-local", "crash", cgroup_parent=parent)
        sandbox = host_paths(sandbox_cgroups_path(parent, pod.id), pod.id).sandbox
        shims = [p for p in procs(sandbox) if "containerd-shim-kata-v2" in argv(p)]
        assert len(shims) == 1
        os.kill(shims[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while existing(parent) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert existing(parent) == []  # sandbox cgroup and the pod cgroup we made
        pod.teardown()
        assert leftovers(cri_rig, cri_client, [pod.id], timeout=30) == {}
    finally:
        remove_tree(parent)
