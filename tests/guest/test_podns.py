"""The pod's namespaces in the agent: real IPC/UTS namespaces pinned by bind mounts (as root,
in a temp dir), the namespace entries a container's runc config gets, the PID holder."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kata_shim import errors, mounts
from kata_shim.guest.podns import PodNamespaces, with_pid_namespace
from kata_shim.guest.processes import GuestProcess


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _inode(path: str | Path) -> int:
    return os.stat(path).st_ino


def _process(pid: int, running: bool = True) -> GuestProcess:
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()
    if not running:
        exited.set_result(0)
    return GuestProcess("c1", "", pid, io=None, exited=exited, terminal=False)  # type: ignore[arg-type]


SPEC_NS = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare, mount)")
def test_create_pins_new_ipc_and_uts_namespaces_with_the_pod_hostname(tmp_path: Path) -> None:
    directory = tmp_path / "ns"
    host_name = socket.gethostname()

    async def main() -> PodNamespaces:
        pod = PodNamespaces(directory)
        await pod.create("podns-unit-host", share_pid=False)
        return pod

    pod = run(main())
    try:
        assert pod.paths == {"ipc": str(directory / "ipc"), "uts": str(directory / "uts")}
        for kind in ("ipc", "uts"):
            assert _inode(directory / kind) != _inode(f"/proc/self/ns/{kind}")
        assert set(mounts.mount_points_under(directory)) == {directory / "ipc", directory / "uts"}
        seen = subprocess.run(
            ["nsenter", f"--uts={directory / 'uts'}", "hostname"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert seen == "podns-unit-host"
        assert socket.gethostname() == host_name  # the agent's own UTS namespace is untouched
    finally:
        pod.release()
    assert mounts.mount_points_under(directory) == []
    assert not (directory / "ipc").exists() and pod.paths == {}


def test_containers_get_the_pods_ipc_and_uts_and_a_new_pid_namespace(tmp_path: Path) -> None:
    pod = PodNamespaces(tmp_path)
    pod.paths = {"ipc": "/ns/ipc", "uts": "/ns/uts"}
    assert pod.apply("c1", list(SPEC_NS), join_pid=False) == [
        {"type": "pid"},
        {"type": "ipc", "path": "/ns/ipc"},
        {"type": "uts", "path": "/ns/uts"},
        {"type": "mount"},
    ]
    # no ipc/uts entry in the spec (host IPC/UTS): none added, as in Kata; pid always added
    assert pod.apply("c1", [{"type": "mount"}], join_pid=False) == [
        {"type": "mount"},
        {"type": "pid"},
    ]


def test_the_first_container_holds_the_pods_pid_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kata_shim.guest import podns

    bound: list[tuple[str, Path]] = []
    monkeypatch.setattr(podns, "_bind", lambda source, target: bound.append((source, target)))
    monkeypatch.setattr(podns, "_same_pid_namespace", lambda pid: False)

    async def main() -> None:
        pod = PodNamespaces(tmp_path)
        pod.paths = {"ipc": "/ns/ipc", "uts": "/ns/uts"}
        first = pod.apply("pause", list(SPEC_NS), join_pid=True)  # nothing to join yet
        assert {"type": "pid"} in first
        holder = _process(4242)
        pod.adopt("pause", holder)
        pod.adopt("app0", _process(5353))  # only the first one counts
        assert bound == [("/proc/4242/ns/pid", tmp_path / "pid")]
        joined = pod.apply("app1", list(SPEC_NS), join_pid=True)
        assert {"type": "pid", "path": str(tmp_path / "pid")} in joined
        assert {"type": "pid"} in pod.apply("app2", list(SPEC_NS), join_pid=False)
        pod.share_pid = True  # CreateSandbox's sandbox_pidns: every container joins
        assert {"type": "pid", "path": str(tmp_path / "pid")} in pod.apply(
            "app3", list(SPEC_NS), join_pid=False
        )
        holder.exited.set_result(0)
        with pytest.raises(errors.FailedPrecondition, match="first container pause has exited"):
            pod.apply("app4", list(SPEC_NS), join_pid=True)

    run(main())


def test_on_the_host_an_absent_pid_entry_stays_absent(tmp_path: Path) -> None:
    """The local agent: no pid entry (pid = NODE) is the host's, as runc gives it; ipc/uts
    are the pod's whatever the spec's paths said (never the agent's host namespaces)."""
    pod = PodNamespaces(tmp_path, host_pid_when_absent=True)
    pod.paths = {"ipc": "/ns/ipc", "uts": "/ns/uts"}
    given = [{"type": "ipc", "path": "/proc/1/ns/ipc"}, {"type": "uts"}, {"type": "mount"}]
    shared = [{"type": "ipc", "path": "/ns/ipc"}, {"type": "uts", "path": "/ns/uts"}]
    assert pod.apply("c1", list(given), join_pid=False) == [*shared, {"type": "mount"}]
    # a join request still gets a pid entry (the first container's, once pinned)
    assert pod.apply("c1", list(given), join_pid=True) == [
        *shared,
        {"type": "mount"},
        {"type": "pid"},
    ]
    assert pod.apply("c1", [{"type": "pid"}], join_pid=False) == [{"type": "pid"}]


def test_a_container_in_the_agents_pid_namespace_is_never_the_pods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the host the agent's PID namespace is the host's: a first container without a PID
    namespace of its own (pid = NODE) is not pinned, so nobody joins the host's by request."""
    from kata_shim.guest import podns

    monkeypatch.setattr(podns, "_bind", lambda source, target: pytest.fail("pinned"))

    async def main() -> None:
        pod = PodNamespaces(tmp_path, host_pid_when_absent=True)
        pod.paths = {"ipc": "/ns/ipc", "uts": "/ns/uts"}
        pod.adopt("pause", _process(os.getpid()))  # our own PID namespace
        assert "pid" not in pod.paths
        assert {"type": "pid"} in pod.apply("app", [{"type": "pid"}], join_pid=True)

    run(main())


def test_with_pid_namespace_adds_one_only_when_missing() -> None:
    assert with_pid_namespace([{"type": "ipc"}]) == [{"type": "ipc"}, {"type": "pid"}]
    kept = [{"type": "pid", "path": "/x"}]
    assert with_pid_namespace(kept) is kept


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare, mount)")
def test_the_pid_holder_is_pinned_for_real(tmp_path: Path) -> None:
    """adopt() bind-mounts a live process's PID namespace file (a new one: `unshare`'s
    child); release() undoes it."""
    parent = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "60"])
    try:
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        deadline = time.monotonic() + 10
        while not (found := children.read_text().split()) and time.monotonic() < deadline:
            time.sleep(0.02)
        sleeper = int(found[0])
        assert _inode(f"/proc/{sleeper}/ns/pid") != _inode("/proc/self/ns/pid")

        async def main() -> PodNamespaces:
            pod = PodNamespaces(tmp_path)
            await pod.create("", share_pid=False)
            pod.adopt("sleeper", _process(sleeper))
            return pod

        pod = run(main())
        try:
            assert _inode(tmp_path / "pid") == _inode(f"/proc/{sleeper}/ns/pid")
        finally:
            pod.release()
        assert mounts.mount_points_under(tmp_path) == []
    finally:
        parent.kill()  # --kill-child: the sleeper goes with it
        parent.wait()


def test_the_table_gives_each_container_the_pods_namespaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CreateContainer in a VM: host namespace paths dropped, the pod's IPC/UTS put in, the
    first container adopted as the PID holder, sandbox_pidns joins it."""
    from kata_shim import oci
    from kata_shim.guest import podns
    from kata_shim.guest.container import GuestContainer
    from kata_shim.guest.containers import ContainerTable
    from kata_shim.guest.sandbox import GuestSandbox
    from kata_shim.guest.storage import StorageSpec
    from tests.fakes.guest import FakeRunc, fake_init

    monkeypatch.setattr(podns, "_bind", lambda source, target: None)
    monkeypatch.setattr(podns, "_same_pid_namespace", lambda pid: False)
    configs: dict[str, dict[str, Any]] = {}

    async def fake_create_in(
        self: ContainerTable, path: Path, cid: str, config: dict[str, Any]
    ) -> GuestContainer:
        configs[cid] = config
        return GuestContainer(cid, path, fake_init(cid), {})

    monkeypatch.setattr(ContainerTable, "_create_in", fake_create_in)
    (tmp_path / "pod" / "rootfs").mkdir(parents=True)
    host_ns = [
        {"type": "pid", "path": "/proc/77/ns/pid"},
        {"type": "ipc", "path": "/proc/77/ns/ipc"},
        {"type": "uts", "path": "/proc/77/ns/uts"},
        {"type": "network", "path": "/var/run/netns/cni-1"},
        {"type": "mount"},
    ]
    spec = oci.spec_from_json(
        {
            "process": {"args": ["sh"], "cwd": "/"},
            "root": {"path": str(tmp_path / "pod" / "rootfs")},
            "linux": {"namespaces": host_ns},
        }
    )

    async def main() -> None:
        sandbox = GuestSandbox(tmp_path / "state", reaper=None, in_vm=True)  # type: ignore[arg-type]
        sandbox.created = True
        await sandbox.add_storages("", [StorageSpec("local", "", "", str(tmp_path / "pod"))])
        sandbox.namespaces.paths = {"ipc": "/ns/ipc", "uts": "/ns/uts"}
        table = ContainerTable(tmp_path / "state", sandbox, FakeRunc(), reaper=None)  # type: ignore[arg-type]
        await table.create("pause", spec)
        await table.create("app", spec, sandbox_pidns=True)
        await table.create("solo", spec, sandbox_pidns=False)

    run(main())
    pod_pid = str(tmp_path / "state" / "ns" / "pid")
    expected = {
        "pause": {"type": "pid"},
        "app": {"type": "pid", "path": pod_pid},
        "solo": {"type": "pid"},
    }
    for cid, pid in expected.items():
        assert configs[cid]["linux"]["namespaces"] == [
            pid,
            {"type": "ipc", "path": "/ns/ipc"},
            {"type": "uts", "path": "/ns/uts"},
            {"type": "mount"},
        ], cid


def test_outside_a_pod_the_specs_namespaces_stay(tmp_path: Path) -> None:
    """An agent run by hand on a host (neither a VM nor the local backend's): no pod
    namespaces; no pid entry stays none (the host's, as runc)."""
    from kata_shim.guest.sandbox import GuestSandbox

    host = GuestSandbox(tmp_path, reaper=None)  # type: ignore[arg-type]
    host.created = True
    given = [{"type": "ipc"}, {"type": "mount"}]
    assert host.container_namespaces("c1", list(given), join_pid=False) == given
    assert host.container_namespaces("c1", list(given), join_pid=True) == [*given, {"type": "pid"}]


def test_the_local_agent_gives_each_container_the_pods_namespaces(tmp_path: Path) -> None:
    """The local backend's agent (`local_pod`): the pod's IPC/UTS like a VM; the spec's
    pid entry is kept (none: the host's, as runc), joined to the pod's on request."""
    from kata_shim.guest.sandbox import GuestSandbox

    host = GuestSandbox(tmp_path, reaper=None, local_pod=True)  # type: ignore[arg-type]
    host.created = True
    host.namespaces.paths = {"ipc": "/ns/ipc", "uts": "/ns/uts", "pid": "/ns/pid"}
    given = [{"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    shared = [{"type": "ipc", "path": "/ns/ipc"}, {"type": "uts", "path": "/ns/uts"}]
    assert host.container_namespaces("c1", list(given), join_pid=False) == [
        *shared,
        {"type": "mount"},
    ]
    assert host.container_namespaces("c1", [*given, {"type": "pid"}], join_pid=False) == [
        *shared,
        {"type": "mount"},
        {"type": "pid"},
    ]
