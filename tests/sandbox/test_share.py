"""SharedDir: real bind mounts into a share, flagged before they show, undone idempotently."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim import fdpath, mounts
from kata_shim.errors import FailedPrecondition, InvalidArgument, ShimError
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


def _options(point: Path) -> set[str]:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(point):
            return set(fields[5].split(","))
    raise AssertionError(f"{point} is not a mount point")


def test_read_only_is_read_only_on_the_host_and_every_share_is_nosuid_nodev(
    tmp_path: Path,
) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "orig.txt").write_text("original")
    shared = SharedDir(tmp_path / "shared")
    shared.create()

    async def main() -> None:
        try:
            await shared.share("c1", "mount-0", volume, readonly=True)
            await shared.share("c1", "mount-1", volume)
            ro, rw = shared.root / "c1" / "mount-0", shared.root / "c1" / "mount-1"
            assert {"ro", "nosuid", "nodev"} <= _options(ro)
            assert {"rw", "nosuid", "nodev"} <= _options(rw)
            with pytest.raises(OSError, match="Read-only file system"):
                (ro / "orig.txt").write_text("pwned")  # even as root
            (rw / "new.txt").write_text("ok")
        finally:
            await shared.unshare("c1")

    asyncio.run(main())
    assert (volume / "orig.txt").read_text() == "original"
    assert mounts.mount_points_under(shared.root) == []


def _decoy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    decoy = tmp_path / "decoy"
    (decoy / "sub").mkdir(parents=True)
    (decoy / "keep.txt").write_text("host data")
    (decoy / "sub" / "deep.txt").write_text("deep")
    return decoy, {"keep.txt": "host data", "sub/deep.txt": "deep"}


def _assert_untouched(decoy: Path, files: dict[str, str]) -> None:
    assert {str(p.relative_to(decoy)) for p in decoy.rglob("*") if p.is_file()} == set(files)
    for name, text in files.items():
        assert (decoy / name).read_text() == text
    assert mounts.mount_points_under(decoy) == []


def test_guest_symlinks_in_the_share_are_never_followed(tmp_path: Path) -> None:
    """Links a guest planted (a link to a host dir, a replaced component): nothing outside moves."""
    decoy, files = _decoy(tmp_path)
    volume = tmp_path / "vol"
    volume.mkdir()
    shared = SharedDir(tmp_path / "shared")
    shared.create()

    async def main() -> None:
        (shared.root / "c1").symlink_to(decoy)  # a whole container dir replaced by a link
        with pytest.raises(FailedPrecondition, match="refusing to follow"):
            await shared.share("c1", "rootfs", volume)
        (shared.root / "c2").mkdir()
        (shared.root / "c2" / "mount-0").symlink_to(decoy / "keep.txt")  # target name pre-planted
        with pytest.raises(FailedPrecondition, match="refusing to follow"):
            await shared.share("c2", "mount-0", tmp_path / "vol")
        await shared.share("c3", "rootfs", volume)
        (shared.root / "c3" / "link").symlink_to(decoy)  # links inside a container dir
        (shared.root / "c3" / "file-link").symlink_to(decoy / "keep.txt")
        for cid in ("c1", "c2", "c3"):
            await shared.unshare(cid)
        await shared.unshare_all()

    asyncio.run(main())
    _assert_untouched(decoy, files)
    assert list(shared.root.iterdir()) == []
    assert volume.is_dir()


def test_a_renamed_container_dir_is_unmounted_by_mount_id_not_by_path(tmp_path: Path) -> None:
    """The guest renames c1 away and puts a link to a host dir in its place."""
    decoy, files = _decoy(tmp_path)
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "data").write_text("volume data")
    shared = SharedDir(tmp_path / "shared")
    shared.create()

    async def main() -> None:
        await shared.share("c1", "mount-0", volume)
        (shared.root / "c1").rename(shared.root / "moved")
        (shared.root / "c1").symlink_to(decoy)
        await shared.unshare("c1")  # removes the link only
        assert mounts.mount_points_under(shared.root) == [shared.root / "moved" / "mount-0"]
        await shared.unshare_all()

    asyncio.run(main())
    _assert_untouched(decoy, files)
    assert (volume / "data").read_text() == "volume data"
    assert list(shared.root.iterdir()) == []


def _mounts_under(base: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> dict[Path, set]:
    """mount point → its per-mount options, for every mount at or below `base`."""
    found = {}
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        point = Path(fields[4].replace("\\040", " "))
        if point == base or base in point.parents:
            found[point] = set(fields[5].split(","))
    return found


@pytest.mark.parametrize("readonly", [True, False], ids=["ro", "rw"])
@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_share_never_appears_in_the_share_without_its_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readonly: bool, kind: str
) -> None:
    """After every mount call the shim makes, each mount below the share already has its flags.

    A bind straight into the share, remounted `ro` afterwards, leaves a window
    in which the guest (through the 9p server) can write the host source.
    """
    source = tmp_path / "vol"
    source.mkdir() if kind == "dir" else source.write_text("x")
    shared = SharedDir(tmp_path / "state" / "shared")
    shared.create()
    wanted = {"ro" if readonly else "rw", "nosuid", "nodev"}
    seen: list[tuple[str, dict[Path, set]]] = []

    def spy(name: str):
        real = getattr(fdpath, name)

        def call(*args: int) -> None:
            real(*args)
            seen.append((name, _mounts_under(shared.root)))

        return call

    for name in ("bind", "remount", "make_private", "move", "detach"):
        if hasattr(fdpath, name):
            monkeypatch.setattr(fdpath, name, spy(name))
    try:
        asyncio.run(shared.share("c1", "mount-0", source, readonly=readonly))
        monkeypatch.undo()
        for name, below in seen:
            for point, options in below.items():
                assert wanted <= options, f"after {name}: {point} is mounted {options}"
        calls = [name for name, _ in seen]
        assert calls == ["bind", "make_private", "bind", "remount", "move", "detach"]
        assert wanted <= _options(shared.root / "c1" / "mount-0")
        assert list(shared.staging.iterdir()) == []  # staging point removed
        assert _mounts_under(tmp_path).keys() == {shared.root / "c1" / "mount-0"}
    finally:
        monkeypatch.undo()
        asyncio.run(shared.unshare_all())
    assert _mounts_under(tmp_path) == {}


@pytest.mark.parametrize("failing", ["make_private", "remount", "move"])
def test_a_failure_while_staging_leaves_nothing_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "orig.txt").write_text("original")
    shared = SharedDir(tmp_path / "state" / "shared")
    shared.create()

    def fail(*args: int) -> None:
        raise OSError(errno.EIO, f"injected {failing} failure")

    monkeypatch.setattr(fdpath, failing, fail)
    with pytest.raises(ShimError, match=f"injected {failing} failure"):
        asyncio.run(shared.share("c1", "mount-0", volume, readonly=True))
    monkeypatch.undo()
    assert _mounts_under(tmp_path) == {}
    assert list(shared.staging.iterdir()) == []
    # the share is usable afterwards: the same target is shared for real
    asyncio.run(shared.share("c1", "mount-0", volume, readonly=True))
    try:
        assert (shared.root / "c1" / "mount-0" / "orig.txt").read_text() == "original"
        assert "ro" in _options(shared.root / "c1" / "mount-0")
    finally:
        asyncio.run(shared.unshare_all())
    assert _mounts_under(tmp_path) == {}


def _run_mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def shared_state_dir(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path` as a shared mount, as / and /run are on a systemd host; its `state` dir.

    The volume's mount is shared too, so the staged bind is a shared mount
    moved under a shared one.
    """
    _run_mount("--bind", str(tmp_path), str(tmp_path))
    try:
        _run_mount("--make-shared", str(tmp_path))
        (tmp_path / "state").mkdir()
        yield tmp_path / "state"
    finally:
        mounts.unmount_all_under(tmp_path)


@pytest.fixture
def slave_namespace() -> Iterator[int]:
    """A process in a new mount namespace whose mounts are slaves of ours (as libvirt's QEMU's)."""
    child = subprocess.Popen(["unshare", "-m", "--propagation", "slave", "--", "sleep", "600"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline, "unshare did not exec sleep"
            time.sleep(0.02)
        assert os.readlink(f"/proc/{child.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_the_copy_propagated_to_a_slave_namespace_is_read_only_too(
    tmp_path: Path, shared_state_dir: Path, slave_namespace: int
) -> None:
    """A file server in another mount namespace (libvirt's QEMU, virtiofsd) gets a `ro` copy.

    A `remount,ro` after the bind changes only this namespace's mount; the
    copy the shared share dir propagated at bind time would stay writable.
    """
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "orig.txt").write_text("original")
    shared = SharedDir(shared_state_dir / "shared")
    shared.create()
    child_info = Path(f"/proc/{slave_namespace}/mountinfo")
    ro, rw = shared.root / "c1" / "mount-0", shared.root / "c1" / "mount-1"
    try:
        asyncio.run(shared.share("c1", "mount-0", volume, readonly=True))
        asyncio.run(shared.share("c1", "mount-1", volume))
        below = _mounts_under(shared_state_dir, child_info)
        print("in the slave namespace:", below)
        assert {"ro", "nosuid", "nodev"} <= below[ro]
        assert {"rw", "nosuid", "nodev"} <= below[rw]
        # nothing of the staging is left there either: only the two shares
        assert below.keys() == {ro, rw}
        with pytest.raises(OSError, match="Read-only file system"):
            Path(f"/proc/{slave_namespace}/root{ro}/orig.txt").write_text("pwned")
        Path(f"/proc/{slave_namespace}/root{rw}/new.txt").write_text("ok")
    finally:
        asyncio.run(shared.unshare_all())
    assert (volume / "orig.txt").read_text() == "original"
    assert (volume / "new.txt").read_text() == "ok"
    assert _mounts_under(shared.root, child_info) == {}  # the unmounts propagated too
    assert _mounts_under(shared.root) == {}
