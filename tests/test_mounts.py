"""Regression: cleanup must never delete through a bind mount (it once deleted a rootfs)."""

from __future__ import annotations

import subprocess

import pytest

from kata_shim import mounts


def test_remove_tree_refuses_a_tree_with_a_same_filesystem_bind_mount(tmp_path) -> None:
    source = tmp_path / "rootfs"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "precious").write_text("user data")
    target = tmp_path / "state" / "shared" / "c1" / "rootfs"
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        assert mounts.mount_points_under(tmp_path / "state") == [target]
        assert mounts.is_mount_point(target)
        with pytest.raises(mounts.MountedError):
            mounts.remove_tree(tmp_path / "state")
        assert (source / "bin" / "precious").read_text() == "user data"
        mounts.unmount_all_under(tmp_path / "state")
        assert mounts.mount_points_under(tmp_path / "state") == []
        mounts.remove_tree(tmp_path / "state")
        assert not (tmp_path / "state").exists()
        assert (source / "bin" / "precious").read_text() == "user data"
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_mountinfo_escapes_are_decoded() -> None:
    line = "44 27 254:0 / /tmp/with\\040space rw - ext4 /dev/vda rw"
    assert [str(p) for p in mounts.mount_points(line)] == ["/tmp/with space"]
