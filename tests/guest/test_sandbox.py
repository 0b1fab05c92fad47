"""GuestSandbox: naming, storages by owner, the bounded OOM queue, console paths, VM roots."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.guest import hostpaths
from kata_shim.guest.sandbox import OOM_QUEUE, GuestSandbox
from kata_shim.guest.storage import StorageSpec


def run(coro):
    return asyncio.run(coro)


def local(path: Path) -> StorageSpec:
    return StorageSpec("local", "", "", str(path))


def test_create_names_the_sandbox_once_and_mounts_its_storages(tmp_path: Path) -> None:
    async def main() -> None:
        sandbox = GuestSandbox(tmp_path, reaper=None, sandbox_id="")  # type: ignore[arg-type]
        assert sandbox.id == "default" and not sandbox.created
        await sandbox.create("guest-sb1", [local(tmp_path / "s1")])
        assert sandbox.id == "guest-sb1" and sandbox.created
        assert sandbox.storages.owned_by("") == [tmp_path / "s1"]
        with pytest.raises(errors.AlreadyExists, match="sandbox guest-sb1 already created"):
            await sandbox.create("guest-sb2", [])
        sandbox.destroy()
        assert not sandbox.created and sandbox.storages.owned_by("") == []

    run(main())


def test_create_refuses_an_unsafe_sandbox_id(tmp_path: Path) -> None:
    async def main() -> None:
        sandbox = GuestSandbox(tmp_path, reaper=None)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidArgument):
            await sandbox.create("../escape", [])
        assert not sandbox.created

    run(main())


def test_vm_roots_only_in_a_vm_and_per_owner(tmp_path: Path) -> None:
    async def main() -> None:
        host = GuestSandbox(tmp_path, reaper=None)  # type: ignore[arg-type]
        assert host.vm_roots("c1") is None
        vm = GuestSandbox(tmp_path, reaper=None, in_vm=True)  # type: ignore[arg-type]
        await vm.add_storages("", [local(tmp_path / "pod")])
        await vm.add_storages("c1", [local(tmp_path / "c1")])
        await vm.add_storages("c2", [local(tmp_path / "c2")])
        roots = [hostpaths.SHARED_DIR, str(tmp_path / "pod"), str(tmp_path / "c1")]
        assert vm.vm_roots("c1") == roots

    run(main())


def test_oom_queue_drops_the_oldest_when_full(tmp_path: Path) -> None:
    async def main() -> None:
        sandbox = GuestSandbox(tmp_path, reaper=None)  # type: ignore[arg-type]
        for n in range(OOM_QUEUE + 2):
            sandbox.notify_oom(f"c{n}")
        assert sandbox.oom_events.qsize() == OOM_QUEUE
        assert await sandbox.oom_events.get() == "c2"

    run(main())


def test_console_paths_are_fresh_and_short(tmp_path: Path) -> None:
    sandbox = GuestSandbox(tmp_path, reaper=None)  # type: ignore[arg-type]
    assert sandbox.console_path(False) is None
    first, second = sandbox.console_path(True), sandbox.console_path(True)
    assert first is not None and second is not None and first != second
    assert first.parent == tmp_path / "tty" and first.parent.is_dir()
    deep = tmp_path / ("d" * 100)
    far = GuestSandbox(deep, reaper=None)  # type: ignore[arg-type]
    try:
        path = far.console_path(True)
        assert path is not None and len(os.fsencode(path)) <= 107
    finally:
        far.destroy()
    assert not path.parent.exists()


def test_on_the_host_create_sets_no_hostname_and_mounts_no_shm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setattr(socket, "sethostname", lambda name: pytest.fail("host hostname changed"))

    async def main() -> None:
        sandbox = GuestSandbox(tmp_path, reaper=None)  # type: ignore[arg-type]
        await sandbox.create("guest-sb1", [], "pod-host")
        assert sandbox.shm is None and sandbox.storages.owned_by("") == []

    run(main())


@pytest.mark.parametrize("where", [{"in_vm": True}, {"local_pod": True}])
def test_for_a_pod_create_sets_the_hostname_and_mounts_the_pods_shm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: dict[str, bool]
) -> None:
    """In a VM and in the local backend's agent (its own UTS namespace) alike."""
    import socket

    from kata_shim.guest import storage

    names: list[str] = []
    monkeypatch.setattr(socket, "sethostname", names.append)
    mounted: list[StorageSpec] = []

    async def fake_mount(self: object, spec: StorageSpec) -> None:
        mounted.append(spec)

    monkeypatch.setattr(storage.Storages, "_mount", fake_mount)
    monkeypatch.setattr(storage, "unmount", lambda path: None)
    from kata_shim.guest import podns

    pinned: list[tuple[Path, str]] = []
    monkeypatch.setattr(podns, "_in_fresh_thread", lambda d, name: pinned.append((d, name)))
    monkeypatch.setattr(podns, "unmount", lambda path: None)

    async def main() -> None:
        sandbox = GuestSandbox(tmp_path, reaper=None, **where)  # type: ignore[arg-type]
        assert sandbox.vm_roots("c1") is None or where.get("in_vm")
        await sandbox.create("guest-sb1", [], "pod-host")
        assert names == ["pod-host"]
        assert pinned == [(tmp_path / "ns", "pod-host")]  # the pod's IPC/UTS namespaces
        assert sandbox.namespaces.paths == {
            "ipc": str(tmp_path / "ns" / "ipc"),
            "uts": str(tmp_path / "ns" / "uts"),
        }
        assert sandbox.shm == str(tmp_path / "shm")
        assert [(s.driver, s.mount_point) for s in mounted] == [("ephemeral", sandbox.shm)]
        assert "mode=1777" in mounted[0].options and "size=65536k" in mounted[0].options
        assert sandbox.storages.owned_by("") == [tmp_path / "shm"]
        sandbox.destroy()
        assert sandbox.shm is None and sandbox.storages.owned_by("") == []
        assert sandbox.namespaces.paths == {}

    run(main())


def test_a_bad_hostname_fails_create_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    def refuse(name: str) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(socket, "sethostname", refuse)

    async def main() -> None:
        sandbox = GuestSandbox(tmp_path, reaper=None, in_vm=True)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidArgument, match="pod hostname 'x'"):
            await sandbox.create("guest-sb1", [], "x")
        assert not sandbox.created

    run(main())
