"""The owner guard: QEMU's chowns run only to owners the pod has; without the shim they fail."""

from __future__ import annotations

import asyncio
import errno
import os
import sys
from pathlib import Path

import pytest

from kata_shim.errors import Unavailable
from kata_shim.sandbox.owners import Owners
from kata_shim.sandbox.qemu.notify import Call, libseccomp, native_arch
from kata_shim.sandbox.qemu.ownerguard import (
    UNCHANGED,
    OwnerGuard,
    OwnerPolicy,
    spawn_guarded,
    syscall_numbers,
)
from tests.sandbox.qemu.jailed import JAIL, run_jailed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other owners needs root")

POD = Owners(frozenset({0, 1000}), frozenset({0, 1000, 27}))

CHOWNS = """
import os, sys
os.chdir(sys.argv[1])
open("f", "w").close()
os.symlink("f", "link")
def attempt(name, call):
    try:
        call()
        result = "ok"
    except OSError as exc:
        result = str(exc.errno)
    st = os.stat("f")
    print(name, result, f"{st.st_uid}:{st.st_gid}", flush=True)
attempt("chown_pod_user", lambda: os.chown("f", 1000, 1000))
attempt("chown_other_uid", lambda: os.chown("f", 4242, -1))
attempt("chown_other_gid", lambda: os.chown("f", -1, 4242))
attempt("chown_group_only", lambda: os.chown("f", -1, 27))
attempt("chown_unchanged", lambda: os.chown("f", -1, -1))
fd = os.open("f", os.O_RDONLY)
attempt("fchown_other", lambda: os.fchown(fd, 4242, 4242))
attempt("fchown_root", lambda: os.fchown(fd, 0, 0))
attempt("lchown_other", lambda: os.lchown("link", 4242, 0))
attempt("fchownat_other", lambda: os.chown("f", 0, 4242, dir_fd=os.open(".", os.O_RDONLY)))
"""


def _results(out: str) -> dict[str, tuple[str, str]]:
    return {name: (result, owner) for name, result, owner in map(str.split, out.splitlines())}


@pytest.mark.parametrize("handover", ["inherited", "socket"])
def test_chowns_run_only_to_owners_the_pod_has(tmp_path: Path, handover: str) -> None:
    """The jail hands its listener over an inherited socket (QEMU backend) or one it
    connects to by path (libvirt's QEMU, `--guard-socket`)."""
    (work := tmp_path / "work").mkdir()
    sockets = tmp_path if handover == "socket" else None
    run = run_jailed(CHOWNS, str(work), owners=POD, socket_dir=sockets)
    status, out, err, guard = asyncio.run(run)
    assert status == 0, err
    eperm = str(errno.EPERM)
    assert _results(out) == {
        "chown_pod_user": ("ok", "1000:1000"),
        "chown_other_uid": (eperm, "1000:1000"),
        "chown_other_gid": (eperm, "1000:1000"),
        "chown_group_only": ("ok", "1000:27"),
        "chown_unchanged": ("ok", "1000:27"),
        "fchown_other": (eperm, "1000:27"),
        "fchown_root": ("ok", "0:0"),
        "lchown_other": (eperm, "0:0"),
        "fchownat_other": (eperm, "0:0"),
    }, out + err
    assert guard.refused == 5
    assert os.lstat(work / "link").st_uid == 0


def test_owners_allowed_later_are_honoured(tmp_path: Path) -> None:
    """`allow` while the jailed process runs (a container created after boot)."""
    script = """
import os, sys
path = os.path.join(sys.argv[1], "f")
open(path, "w").close()
for attempt in range(2):
    try:
        os.chown(path, 4242, 4242)
        print("ok", flush=True)
    except OSError as exc:
        print(exc.errno, flush=True)
    if attempt == 0:
        sys.stdin.readline()
"""

    async def grow(guard: OwnerGuard, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stdin is not None
        assert (await proc.stdout.readline()).strip() == str(errno.EPERM).encode()
        guard.allow(Owners(frozenset({4242}), frozenset({4242})))
        proc.stdin.write(b"\n")

    status, out, err, _ = asyncio.run(run_jailed(script, str(tmp_path), during=grow))
    assert status == 0 and out.split() == ["ok"], out + err
    assert (tmp_path / "f").stat().st_uid == 4242


def test_without_the_guard_every_chown_fails_closed(tmp_path: Path) -> None:
    """The guard gone (the shim died): even an allowed chown fails, with ENOSYS."""
    script = """
import os, sys
path = os.path.join(sys.argv[1], "f")
open(path, "w").close()
os.chown(path, 0, 0)
print("first ok", flush=True)
sys.stdin.readline()
try:
    os.chown(path, 0, 0)
    print("second ok")
except OSError as exc:
    print("second", exc.errno)
"""

    async def stop_guard(guard: OwnerGuard, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stdin is not None
        assert (await proc.stdout.readline()).strip() == b"first ok"
        guard.close()
        proc.stdin.write(b"\n")

    status, out, err, _ = asyncio.run(run_jailed(script, str(tmp_path), during=stop_guard))
    assert status == 0 and out.split() == ["second", str(errno.ENOSYS)], out + err


def test_a_jailed_process_cannot_add_a_listener_of_its_own() -> None:
    """seccomp(SET_MODE_FILTER, NEW_LISTENER, NULL): EFAULT outside the jail, EPERM inside."""
    script = """
import ctypes, os
from kata_shim.sandbox.qemu.notify import libseccomp
number = libseccomp().seccomp_syscall_resolve_name(b"seccomp")
libc = ctypes.CDLL(None, use_errno=True)
result = libc.syscall(number, 1, 8, None)
print(result, ctypes.get_errno())
"""
    status, out, err, _ = asyncio.run(run_jailed(script))
    assert status == 0 and out.split() == ["-1", str(errno.EPERM)], out + err
    control = asyncio.run(_unjailed(script))
    assert control.split() == ["-1", str(errno.EFAULT)]


async def _unjailed(script: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode()


def test_a_jail_that_exits_early_is_an_error_not_a_hang() -> None:
    async def attach_to_nothing() -> None:
        guard = OwnerGuard("test")
        try:
            proc = await asyncio.create_subprocess_exec("true", pass_fds=[guard.jail_fd()])
            await proc.wait()
            await guard.attach(30)
        finally:
            guard.close()

    with pytest.raises(Unavailable, match="exited before handing over"):
        asyncio.run(attach_to_nothing())


def _call(name: str, args: tuple[int, ...], arch: int | None = None) -> Call:
    number = libseccomp().seccomp_syscall_resolve_name(name.encode())
    assert number in syscall_numbers()
    return Call(1, 1, number, native_arch() if arch is None else arch, (*args, 0, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("name", "args", "refused"),
    [
        ("fchownat", (3, 0, 1000, 1000), False),
        ("fchownat", (3, 0, 1000, 4242), True),
        ("fchownat", (3, 0, UNCHANGED, UNCHANGED), False),
        ("fchownat", (3, 0, 0xAB_FFFFFFFF, 27), False),  # only uid_t's 32 bits count
        ("fchownat", (3, 0, 0x1_00001092, 0), True),  # 4242 with junk above
        ("fchown", (3, 4242, UNCHANGED), True),
        ("chown", (0, UNCHANGED, 27), False),
        ("lchown", (0, 1000, 4242), True),
        # virtiofsd creates files as the guest caller: its threads' id changes are guarded
        ("setresuid", (UNCHANGED, 1000, UNCHANGED), False),
        ("setresuid", (UNCHANGED, 0, UNCHANGED), False),
        ("setresuid", (UNCHANGED, 4242, UNCHANGED), True),
        ("setresuid", (4242, UNCHANGED, UNCHANGED), True),
        ("setresgid", (UNCHANGED, 27, UNCHANGED), False),
        ("setresgid", (UNCHANGED, UNCHANGED, 4242), True),
        ("setuid", (4242,), True),
        ("setgid", (1000,), False),
        ("setreuid", (1000, 4242), True),
        ("setfsuid", (1000,), False),
        ("setfsgid", (4242,), True),
    ],
)
def test_policy_reads_the_right_arguments(name: str, args: tuple[int, ...], refused: bool) -> None:
    policy = OwnerPolicy()
    policy.owners = POD
    assert (policy.refusal(_call(name, args)) == errno.EPERM) is refused


def test_policy_refuses_calls_of_another_arch_or_syscall() -> None:
    policy = OwnerPolicy()
    policy.owners = POD
    assert policy.refusal(_call("fchown", (3, 0, 0), arch=0x40000003)) == errno.EPERM
    assert policy.refusal(Call(1, 1, 0, native_arch(), (0,) * 6)) == errno.EPERM


SETIDS = """
import os, sys
os.chdir(sys.argv[1])
def attempt(name, uid, gid):
    try:
        os.setresgid(-1, gid, -1)
        os.setresuid(-1, uid, -1)
        open(name, "w").close()  # made as (uid, gid), as virtiofsd makes a guest's file
        result = "ok"
    except OSError as exc:
        result = str(exc.errno)
    finally:
        os.setresuid(-1, 0, -1)
        os.setresgid(-1, 0, -1)
    print(name, result, flush=True)
attempt("pod_user", 1000, 1000)
attempt("other_uid", 4242, 1000)
attempt("other_gid", 1000, 4242)
"""


def test_id_changes_run_only_to_owners_the_pod_has(tmp_path: Path) -> None:
    """virtiofsd's worker threads take the guest caller's ids to create a file: a stranger's
    ids are refused, so no file of theirs is made on the host."""
    (work := tmp_path / "work").mkdir(mode=0o777)
    work.chmod(0o777)
    run = run_jailed(SETIDS, str(work), owners=POD, jail_options=("--trap-setid",))
    status, out, err, guard = asyncio.run(run)
    assert status == 0, err
    eperm = str(errno.EPERM)
    assert dict(line.split() for line in out.splitlines()) == {
        "pod_user": "ok",
        "other_uid": eperm,
        "other_gid": eperm,
    }, out + err
    assert {path.name: path.stat().st_uid for path in work.iterdir()} == {"pod_user": 1000}
    assert guard.refused == 2


def test_without_trap_setid_id_changes_are_not_trapped(tmp_path: Path) -> None:
    """QEMU's jail (no --trap-setid) leaves the setuid family alone, as before virtio-fs."""
    (work := tmp_path / "work").mkdir()
    work.chmod(0o777)
    status, out, err, guard = asyncio.run(run_jailed(SETIDS, str(work), owners=POD))
    assert status == 0, err
    assert set(dict(line.split() for line in out.splitlines()).values()) == {"ok"}, out + err
    assert guard.refused == 0


def test_spawn_guarded_guards_only_a_jailed_server(tmp_path: Path) -> None:
    """The backend's and virtiofsd's spawn: a guard (answering chowns) only under the jail."""
    target = tmp_path / "f"
    target.touch()
    script = f"import os; os.chown({str(target)!r}, 1000, 1000); os.chown({str(target)!r}, 7, 7)"
    plain = [sys.executable, "-c", "import sys; sys.stderr.write('plain')"]

    async def main() -> tuple[int | None, int, OwnerGuard | None, OwnerGuard | None]:
        proc, none = await spawn_guarded("t", plain, (), POD, tmp_path / "plain.log")
        await proc.wait()
        argv = [*JAIL, "--", sys.executable, "-c", script]
        jailed_proc, guard = await spawn_guarded("t", argv, (), POD, tmp_path / "jail.log")
        assert guard is not None
        try:
            await guard.attach(60)
            return proc.returncode, await jailed_proc.wait(), none, guard
        finally:
            guard.close()

    plain_status, status, none, guard = asyncio.run(main())
    assert plain_status == 0 and none is None and (tmp_path / "plain.log").read_text() == "plain"
    assert status != 0 and "PermissionError" in (tmp_path / "jail.log").read_text()
    assert target.stat().st_uid == 1000 and guard is not None and guard.refused == 1
