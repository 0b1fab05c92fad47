"""virtiofsd: its command line, its confinement, and read-only shares in its namespace."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim import mounts
from kata_shim.sandbox.owners import Owners
from kata_shim.sandbox.qemu.virtiofsd import (
    VIRTIOFSD,
    VirtiofsConfig,
    VirtiofsDaemon,
    daemon_args,
)
from kata_shim.sandbox.share import SharedDir

#: cap_chown, cap_dac_override, cap_fowner, cap_setgid, cap_setuid
SERVING_CAPS = 0xCB


def test_daemon_args_confine_virtiofsd() -> None:
    config = VirtiofsConfig.from_table({"virtio_fs_cache": "never", "virtio_fs_extra_args": ["-d"]})
    argv = daemon_args(config, Path("/s/shared"), 7)
    assert argv[:5] == [argv[0], "-m", "kata_shim.sandbox.qemu.jail", "--trap-setid", "--"]
    setpriv = argv.index("--") + 1
    assert argv[setpriv + 1] == (
        "--bounding-set=-all,+chown,+dac_override,+fowner,+setuid,+setgid,+setpcap,+sys_admin,"
        "+sys_resource"
    )
    assert "--no-new-privs" in argv
    daemon = argv.index(VIRTIOFSD)
    assert argv[daemon:] == [
        VIRTIOFSD,
        "--fd=7",
        "-o",
        "source=/s/shared",
        "-o",
        "sandbox=namespace",
        "-o",
        "cache=none",
        "-o",
        "no_xattr",
        "-o",
        "modcaps=-fsetid:-mknod:-setfcap",
        "-d",
    ]


def test_config_defaults() -> None:
    assert VirtiofsConfig.from_table({}) == VirtiofsConfig(VIRTIOFSD, "auto", ())
    assert VirtiofsConfig.from_table({"virtio_fs_daemon": "/opt/vfsd"}).daemon == "/opt/vfsd"


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _group(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    found.append(int(entry))
            except ProcessLookupError:
                pass
    return sorted(found)


def _wait_until(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "virtiofs-state"
    state.mkdir(mode=0o700)
    try:
        yield state
    finally:
        mounts.unmount_all_under(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="virtiofsd's sandbox needs root")
@pytest.mark.skipif(not os.access(VIRTIOFSD, os.X_OK), reason=f"no {VIRTIOFSD}")
def test_virtiofsd_is_confined_and_sees_read_only_shares_read_only(
    tmp_path: Path, state: Path
) -> None:
    """A client connects (as QEMU would): virtiofsd sets up its namespace sandbox and drops
    to the serving capabilities; a volume shared read-only afterwards is read-only in its
    mount namespace too; `stop` ends both of its processes."""
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "orig.txt").write_text("original")
    shared = SharedDir(state / "shared")
    shared.create(propagating=True)
    daemon = VirtiofsDaemon("virtiofs-unit", VirtiofsConfig(), shared.root, state)

    async def main() -> None:
        await daemon.start(Owners())
        client = socket.socket(socket.AF_UNIX)
        try:
            client.connect(str(daemon.socket_path))
            _wait_until(lambda: len(_group(daemon.pid)) == 2)  # the parent and its child
            child = max(_group(daemon.pid))
            _wait_until(lambda: int(_status(child)["CapEff"], 16) == SERVING_CAPS)
            for pid in _group(daemon.pid):
                status = _status(pid)
                print(
                    pid, {k: v for k, v in status.items() if k.startswith(("Cap", "Secc", "NoN"))}
                )
                assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
                caps = SERVING_CAPS if pid == child else 0  # the parent only waits: none
                assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == caps
                assert int(status["CapBnd"], 16) == int(status["CapInh"], 16) == 0
                assert int(status["CapAmb"], 16) == 0
            assert os.readlink(f"/proc/{child}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            await shared.share("c1", "mount-0", volume, readonly=True)
            await shared.share("c1", "mount-1", volume)
            ro = Path(f"/proc/{child}/root/c1/mount-0/orig.txt")
            rw = Path(f"/proc/{child}/root/c1/mount-1/new.txt")
            with pytest.raises(OSError, match="Read-only file system"):
                ro.write_text("pwned")
            rw.write_text("ok")
            assert (volume / "orig.txt").read_text() == "original"
            assert (volume / "new.txt").read_text() == "ok"
            group = daemon.pid
            await daemon.stop()
            assert _group(group) == []
            assert not daemon.socket_path.exists()
        finally:
            client.close()
            await daemon.stop()
            await shared.unshare_all()

    asyncio.run(main())


@pytest.mark.skipif(os.geteuid() != 0, reason="virtiofsd's sandbox needs root")
def test_a_missing_daemon_is_an_error_not_a_hang(state: Path) -> None:
    config = VirtiofsConfig(daemon=str(state / "no-virtiofsd"))
    daemon = VirtiofsDaemon("virtiofs-unit", config, state, state)

    async def main() -> None:
        try:
            await asyncio.wait_for(daemon.start(Owners()), 60)
            assert await asyncio.wait_for(daemon.wait(), 30) != 0
        finally:
            await daemon.stop()

    asyncio.run(main())
    assert "no-virtiofsd" in (state / "virtiofsd.log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="virtiofsd's sandbox needs root")
def test_watch_the_daemon_dying_first_is_the_vms_death(state: Path) -> None:
    config = VirtiofsConfig(daemon=str(state / "no-virtiofsd"))
    daemon = VirtiofsDaemon("virtiofs-unit", config, state, state)
    deaths: list[str] = []

    async def main() -> None:
        vm = await asyncio.create_subprocess_exec("sleep", "600")
        try:
            await daemon.start(Owners())
            await asyncio.wait_for(daemon.watch(vm, deaths.append), 60)
        finally:
            vm.kill()
            await vm.wait()
            await daemon.stop()

    asyncio.run(main())
    assert len(deaths) == 1 and deaths[0].startswith("that its virtiofsd (pid "), deaths
    assert "exited with status" in deaths[0] and "no-virtiofsd" in deaths[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="virtiofsd's sandbox needs root")
@pytest.mark.skipif(not os.access(VIRTIOFSD, os.X_OK), reason=f"no {VIRTIOFSD}")
def test_watch_the_vm_exiting_ends_the_daemon(state: Path) -> None:
    shared = SharedDir(state / "shared")
    shared.create(propagating=True)
    daemon = VirtiofsDaemon("virtiofs-unit", VirtiofsConfig(), shared.root, state)
    deaths: list[str] = []

    async def main() -> None:
        vm = await asyncio.create_subprocess_exec("sleep", "600")
        await daemon.start(Owners())
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(daemon.socket_path))
        try:
            _wait_until(lambda: len(_group(daemon.pid)) == 2)
            watch = asyncio.ensure_future(daemon.watch(vm, deaths.append))
            group = daemon.pid
            vm.kill()  # the VM SIGKILLed: the daemon must go too
            await asyncio.wait_for(watch, 30)
            assert daemon.returncode is not None and _group(group) == []
        finally:
            client.close()
            with contextlib.suppress(ProcessLookupError):
                vm.kill()
            await vm.wait()
            await daemon.stop()

    asyncio.run(main())
    assert deaths == []
