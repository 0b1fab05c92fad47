"""Socket address = sha256 of Go filepath.Join(address, ns, id); atomic bundle-file writes."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from kata_shim.shim import paths
from kata_shim.shim.paths import atomic_write, go_join, socket_address, socket_path

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("elements", "joined"),
    [
        (("", "ns", "id"), "ns/id"),  # iSulad: no -address
        (("/run/containerd/containerd.sock", "k8s.io", "sb1"),
         "/run/containerd/containerd.sock/k8s.io/sb1"),
        (("/a/", "b", ""), "/a/b"),
        (("", "", ""), ""),
        (("a//b", "../c"), "a/c"),
        (("//a", "b"), "/a/b"),  # Go cleans a leading '//', posixpath would not
        (("/", "ns", "id"), "/ns/id"),
        (("a", "/b", "./c/"), "a/b/c"),
        (("..", "x"), "../x"),
    ],
)  # fmt: skip
def test_go_join_semantics(elements: tuple[str, ...], joined: str) -> None:
    assert go_join(*elements) == joined


def _expected(joined: str) -> str:
    return "unix:///run/containerd/s/" + hashlib.sha256(joined.encode()).hexdigest()


def test_socket_address_matches_containerd_formula() -> None:
    address = "/run/containerd/containerd.sock"
    assert socket_address(address, "k8s.io", "sb1") == _expected(f"{address}/k8s.io/sb1")
    # a trailing slash on the address does not change the hash (filepath.Join cleans)
    assert socket_address(address + "/", "k8s.io", "sb1") == socket_address(
        address, "k8s.io", "sb1"
    )


def test_socket_address_with_empty_address_isulad() -> None:
    assert socket_address("", "isula", "c1") == _expected("isula/c1")
    assert socket_address("", "isula", "c1") != socket_address("", "isula", "c2")


def test_socket_path_length_is_below_limit_even_for_long_names() -> None:
    address = socket_address("/" + "a" * 300, "n" * 200, "i" * 76)
    path = socket_path(address)
    assert path is not None and path.startswith("/run/containerd/s/")
    assert len(path) < 106
    assert len(path) == len("/run/containerd/s/") + 64


def test_socket_path_parsing() -> None:
    assert socket_path("unix:///run/x.sock\n") == "/run/x.sock"
    assert socket_path("ttrpc+vsock://3:1024") is None
    assert socket_path("abstract-name") is None


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "address"
    target.write_text("old")
    atomic_write(str(target), b"unix:///new", 0o600)
    assert target.read_bytes() == b"unix:///new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["address"]


def test_atomic_write_survives_a_stale_temp_file(tmp_path: Path) -> None:
    stale = tmp_path / f".shim.pid.{os.getpid()}.tmp"
    stale.write_text("garbage")
    atomic_write(str(tmp_path / "shim.pid"), b"42")
    assert (tmp_path / "shim.pid").read_text() == "42"
    assert not stale.exists()


def test_atomic_write_uses_o_excl_and_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    renamed: list[tuple[str, str]] = []
    real_open, real_rename = os.open, os.rename

    def spy_open(path: str, flags: int, mode: int = 0o777) -> int:
        opened.append(flags)
        return real_open(path, flags, mode)

    def spy_rename(src: str, dst: str) -> None:
        renamed.append((src, dst))
        assert Path(dst).read_text() == "old"  # readers still see the old content
        real_rename(src, dst)

    (tmp_path / "address").write_text("old")
    monkeypatch.setattr(paths.os, "open", spy_open)
    monkeypatch.setattr(paths.os, "rename", spy_rename)
    atomic_write(str(tmp_path / "address"), b"new")
    assert opened and opened[0] & os.O_EXCL and opened[0] & os.O_CREAT
    assert renamed == [(str(tmp_path / f".address.{os.getpid()}.tmp"), str(tmp_path / "address"))]


def test_atomic_write_failure_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_rename(src: str, dst: str) -> None:
        raise OSError("boom")

    monkeypatch.setattr(paths.os, "rename", broken_rename)
    with pytest.raises(OSError, match="boom"):
        atomic_write(str(tmp_path / "address"), b"x")
    assert list(tmp_path.iterdir()) == []
