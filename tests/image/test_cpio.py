"""The newc writer produces archives the system cpio tool reads back unchanged."""

from __future__ import annotations

import io
import os
import subprocess

from kata_shim.image.cpio import write_newc


def make_tree(root) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin/tool").chmod(0o755)
    (root / "bin/link").symlink_to("tool")
    (root / "empty").mkdir()
    (root / "data").write_bytes(os.urandom(5000))


def test_round_trip_with_system_cpio(tmp_path) -> None:
    make_tree(tmp_path / "in")
    archive = io.BytesIO()
    count = write_newc(tmp_path / "in", archive)
    assert count == 5
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=archive.getvalue(), cwd=out, check=True)
    assert (out / "data").read_bytes() == (tmp_path / "in/data").read_bytes()
    assert os.readlink(out / "bin/link") == "tool"
    assert (out / "bin/tool").stat().st_mode & 0o777 == 0o755
    assert (out / "empty").is_dir()


def test_output_is_deterministic(tmp_path) -> None:
    make_tree(tmp_path / "a")
    first, second = io.BytesIO(), io.BytesIO()
    write_newc(tmp_path / "a", first)
    os.utime(tmp_path / "a/data", (1, 1))  # mtimes must not matter
    write_newc(tmp_path / "a", second)
    assert first.getvalue() == second.getvalue()
    assert len(first.getvalue()) % 512 == 0
