"""Storage mounts: drivers, reference counting across owners, release (real mounts, root)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.guest.reaper import Reaper
from kata_shim.guest.storage import Storages, StorageSpec, unmount

pytestmark = [pytest.mark.timeout(20)]


def mounted(path: Path) -> bool:
    text = Path("/proc/self/mountinfo").read_text()
    return any(line.split()[4] == str(path) for line in text.splitlines())


def run(test) -> None:
    async def main() -> None:
        reaper = Reaper()
        reaper.install(asyncio.get_running_loop(), subreaper=False)
        try:
            await test(Storages(reaper))
        finally:
            reaper.uninstall()

    asyncio.run(main())


def test_drivers_and_reference_counting(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("data")
    tmpfs = StorageSpec("ephemeral", "tmpfs", "", str(tmp_path / "tmpfs"))
    bind = StorageSpec("local-bind", str(source), "bind", str(tmp_path / "bind"), ("ro",))
    local = StorageSpec("local", "", "", str(tmp_path / "dir"))

    async def test(storages: Storages) -> None:
        try:
            await storages.add("", tmpfs)
            await storages.add("c1", bind)
            await storages.add("c2", bind)  # shared: mounted once
            await storages.add("c1", local)
            assert mounted(tmp_path / "tmpfs") and mounted(tmp_path / "bind")
            assert (tmp_path / "bind" / "f").read_text() == "data"
            assert (tmp_path / "dir").is_dir() and not mounted(tmp_path / "dir")
            assert sorted(storages.owned_by("c1")) == [tmp_path / "bind", tmp_path / "dir"]
            storages.release("c1")
            assert mounted(tmp_path / "bind")  # c2 still uses it
            storages.release("c2")
            assert not mounted(tmp_path / "bind") and mounted(tmp_path / "tmpfs")
            storages.release_all()
            assert not mounted(tmp_path / "tmpfs")
            assert (source / "f").read_text() == "data"
        finally:
            for name in ("bind", "tmpfs"):
                unmount(tmp_path / name)

    run(test)


def test_mount_failures_and_bad_mount_points(tmp_path: Path) -> None:
    async def test(storages: Storages) -> None:
        with pytest.raises(errors.InvalidArgument):
            await storages.add("c", StorageSpec("9p", "share", "9p", "relative/path"))
        bogus = StorageSpec("blk", "/dev/nonexistent", "ext4", str(tmp_path / "m"))
        with pytest.raises(errors.FailedPrecondition, match="nonexistent"):
            await storages.add("c", bogus)
        assert storages.owned_by("c") == []

    run(test)


def test_unmount_of_a_plain_directory_is_fine(tmp_path: Path) -> None:
    unmount(tmp_path)
    unmount(tmp_path / "missing")


def _mount_line(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return next(line.split() for line in text.splitlines() if line.split()[4] == str(path))


def test_ephemeral_options_become_mount_flags_and_tmpfs_data(tmp_path: Path) -> None:
    options = ("nosuid", "noexec", "nodev", "ro", "mode=1770", "size=1024k")
    spec = StorageSpec("ephemeral", "tmpfs", "tmpfs", str(tmp_path / "shm"), options)

    async def test(storages: Storages) -> None:
        try:
            await storages.add("", spec)
            fields = _mount_line(tmp_path / "shm")
            assert {"ro", "nosuid", "nodev", "noexec"} <= set(fields[5].split(","))
            super_options = fields[fields.index("-") + 3].split(",")
            assert "size=1024k" in super_options and "mode=1770" in super_options
            assert oct((tmp_path / "shm").stat().st_mode & 0o7777) == "0o1770"
        finally:
            unmount(tmp_path / "shm")

    run(test)


def test_a_bad_tmpfs_option_is_refused_and_nothing_is_mounted(tmp_path: Path) -> None:
    bad = StorageSpec("ephemeral", "tmpfs", "tmpfs", str(tmp_path / "m"), ("size=lots",))

    async def test(storages: Storages) -> None:
        with pytest.raises(errors.FailedPrecondition, match=r"size=lots.*Invalid argument"):
            await storages.add("c", bad)
        assert storages.owned_by("c") == [] and not mounted(tmp_path / "m")

    run(test)
