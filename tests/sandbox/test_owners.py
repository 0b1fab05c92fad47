"""The owners a pod has: a user's ids, and its rootfs's users and groups (never through a link)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kata_shim.sandbox import owners as owners_module
from kata_shim.sandbox.owners import Owners, owners_in_rootfs, owners_of_user

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment:x:77:77
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1001::/home/app:/bin/sh
broken:x:notanumber:5
short:x
huge:x:4294967295:99999999999::/:
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = "root:x:0:\nwheel:x:10:app\nstaff:x:50:\nbad:x:-3:\n"


def _rootfs(tmp_path: Path, passwd: str = PASSWD, group: str = GROUP) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text(passwd)
    (rootfs / "etc" / "group").write_text(group)
    return rootfs


def test_users_and_groups_of_a_rootfs(tmp_path: Path) -> None:
    found = owners_in_rootfs(_rootfs(tmp_path))
    assert found.uids == {0, 1, 1000, 65534}
    assert found.gids == {0, 1, 1001, 65534, 10, 50}


def test_a_user_brings_uid_gid_and_additional_gids() -> None:
    assert owners_of_user(1000, 1000, [27, 100]) == Owners(
        frozenset({0, 1000}), frozenset({0, 1000, 27, 100})
    )
    assert owners_of_user(None, "x", [True, -1, 2**32 - 1, 5]) == Owners(
        frozenset({0}), frozenset({0, 5})
    )
    assert owners_of_user(7, 8) <= owners_of_user(7, 8) | Owners(frozenset({9}))


def test_a_linked_etc_or_passwd_is_never_followed(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "passwd").write_text("hostuser:x:4242:4242::/:\n")
    linked_dir = tmp_path / "a" / "rootfs"
    linked_dir.mkdir(parents=True)
    (linked_dir / "etc").symlink_to(host / "etc")
    assert owners_in_rootfs(linked_dir) == Owners()
    linked_file = _rootfs(tmp_path / "b", group="")
    (linked_file / "etc" / "passwd").unlink()
    (linked_file / "etc" / "passwd").symlink_to(host / "etc" / "passwd")
    assert owners_in_rootfs(linked_file) == Owners()


def test_a_fifo_or_directory_adds_nothing_and_never_blocks(tmp_path: Path) -> None:
    rootfs = _rootfs(tmp_path)
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")
    (rootfs / "etc" / "group").unlink()
    (rootfs / "etc" / "group").mkdir()
    assert owners_in_rootfs(rootfs) == Owners()


def test_missing_files_or_rootfs_add_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert owners_in_rootfs(tmp_path / "empty") == Owners()
    assert owners_in_rootfs(tmp_path / "nope") == Owners()


def test_only_the_start_of_a_huge_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(owners_module, "MAX_ID_FILE", 64)
    filler = "".join(f"u{n}:x:{n}:{n}::/:\n" for n in range(100, 200))
    found = owners_in_rootfs(_rootfs(tmp_path, passwd=filler, group=""))
    assert 100 in found.uids and 199 not in found.uids and len(found.uids) < 10
