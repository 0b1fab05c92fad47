"""The jail's seccomp filter: no setuid/setgid mode and no device node, everything else as usual."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kata_shim.sandbox.qemu import jail
from tests.sandbox.qemu.jailed import JAIL, run_jailed

SCRIPT = """
import os, stat, sys
os.chdir(sys.argv[1])
def attempt(name, call):
    try:
        call()
        print(name, "ok")
    except OSError as exc:
        print(name, exc.errno)
open("f", "w").close()
attempt("chmod_suid", lambda: os.chmod("f", 0o4755))
attempt("chmod_sgid", lambda: os.chmod("f", 0o2755))
attempt("chmod_plain", lambda: os.chmod("f", 0o755))
attempt("create_suid", lambda: os.close(os.open("g", os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt("create_plain", lambda: os.close(os.open("h", os.O_CREAT | os.O_WRONLY, 0o644)))
attempt("mknod_char", lambda: os.mknod("c", 0o600 | stat.S_IFCHR, os.makedev(1, 3)))
attempt("mknod_fifo", lambda: os.mknod("p", 0o600 | stat.S_IFIFO))
"""


def test_privileged_modes_and_devices_are_refused_under_the_jail(tmp_path: Path) -> None:
    status, out, err, _ = asyncio.run(run_jailed(SCRIPT, str(tmp_path)))
    assert status == 0, err
    results = dict(line.split() for line in out.splitlines())
    assert results == {
        "chmod_suid": "1",
        "chmod_sgid": "1",
        "chmod_plain": "ok",
        "create_suid": "1",
        "create_plain": "ok",
        "mknod_char": "1",
        "mknod_fifo": "ok",
    }, out + err
    assert not (tmp_path / "g").exists()
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o755
    assert os.geteuid() != 0 or not (tmp_path / "c").exists()  # root could have made it


def test_without_the_jail_the_same_calls_succeed(tmp_path: Path) -> None:
    """The control: as root, every one of those calls works outside the jail."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True
    )
    results = dict(line.split() for line in done.stdout.splitlines())
    assert results["chmod_suid"] == "ok" and results["create_suid"] == "ok"
    if os.geteuid() == 0:
        assert results["mknod_char"] == "ok"


def test_without_an_owner_guard_every_chown_fails(tmp_path: Path) -> None:
    """Launched by hand (no guard socket): the program runs, and no chown goes through."""
    env = {key: value for key, value in os.environ.items() if key != "KATA_SHIM_OWNER_GUARD_FD"}
    script = """
import os, sys
path = os.path.join(sys.argv[1], "f")
open(path, "w").close()
for uid, gid in ((0, 0), (-1, -1), (1000, 1000)):
    try:
        os.chown(path, uid, gid)
        print("ok")
    except OSError as exc:
        print(exc.errno)
"""
    done = subprocess.run(
        [*JAIL, "--", sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert done.stdout.split() == ["1", "1", "1"], done.stdout + done.stderr
    assert (tmp_path / "f").stat().st_uid == os.geteuid()


def test_unknown_jail_options_or_a_missing_separator_are_refused() -> None:
    for argv in (["--frobnicate", "--", "/bin/true"], ["/bin/true"], ["--"]):
        with pytest.raises(SystemExit, match="usage"):
            jail.main(argv)


def test_an_unreachable_guard_socket_stops_the_jail(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot reach the owner guard"):
        jail.main(["--guard-socket", str(tmp_path / "absent.sock"), "--", "/bin/true"])
