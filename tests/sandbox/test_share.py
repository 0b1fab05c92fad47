"""SharedDir: real bind mounts of directories and files into a share, undone idempotently."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kata_shim import mounts
from kata_shim.errors import FailedPrecondition, InvalidArgument
from kata_shim.sandbox.share import GUEST_SHARED, SharedDir


def test_directories_and_files_are_bound_and_unshared(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "host.txt").write_text("from host")
    single = tmp_path / "hosts"
    single.write_text("127.0.0.1 localhost\n")
    shared = SharedDir(tmp_path / "state" / "shared")
    shared.create()

    async def main() -> None:
        try:
            assert await shared.share("c1", "mount-3", volume) == f"{GUEST_SHARED}/c1/mount-3"
            assert await shared.share("c1", "mount-4", single) == f"{GUEST_SHARED}/c1/mount-4"
            await shared.share("c1", "mount-3", volume)  # again: no second mount on top
            target = shared.root / "c1" / "mount-3"
            assert (target / "host.txt").read_text() == "from host"
            (target / "guest.txt").write_text("from guest")  # read-write both ways
            assert (volume / "guest.txt").read_text() == "from guest"
            assert (shared.root / "c1" / "mount-4").read_text() == single.read_text()
            assert len(mounts.mount_points_under(shared.root)) == 2
        finally:
            await shared.unshare("c1")
        await shared.unshare("c1")  # idempotent
        assert not (shared.root / "c1").exists()
        assert volume.is_dir() and (volume / "guest.txt").exists()  # sources untouched

    asyncio.run(main())


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\0y"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    shared = SharedDir(tmp_path / "shared")
    with pytest.raises(InvalidArgument):
        asyncio.run(shared.share("c1", name, tmp_path))
    with pytest.raises(InvalidArgument):
        asyncio.run(shared.share(name, "rootfs", tmp_path))
    assert not (tmp_path / "shared").exists()


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    shared = SharedDir(tmp_path / "shared")
    with pytest.raises(FailedPrecondition, match="does not exist"):
        asyncio.run(shared.share("c1", "mount-0", tmp_path / "nope"))


def test_unshare_all_removes_every_container(tmp_path: Path) -> None:
    shared = SharedDir(tmp_path / "shared")
    shared.create()

    async def main() -> None:
        for cid in ("a", "b"):
            await shared.share(cid, "rootfs", tmp_path)
        await shared.unshare_all()

    asyncio.run(main())
    assert list(shared.root.iterdir()) == []
    assert mounts.mount_points_under(shared.root) == []
