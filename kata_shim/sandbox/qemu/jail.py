"""`python -m kata_shim.sandbox.qemu.jail -- argv...`: exec argv (QEMU) under our seccomp filter.

The 9p server passes the guest's file modes and owners through to the host
(QEMU's `mapped-xattr` model would keep them in xattrs instead, but cannot
read a symlink that already exists on the host, which every container image
has). So the file server itself is kept from giving a host file privilege:
this filter makes QEMU's chmod-family and create calls fail with EPERM
whenever the mode carries a setuid or setgid bit, and mknod of a character or
block device fail likewise (besides QEMU lacking CAP_MKNOD, confine.py).
openat2, whose mode sits in a struct a filter cannot inspect, fails with
ENOSYS (glibc and QEMU fall back to openat).
Every chown-family call, and with `--trap-setid` (virtiofsd, which creates
files as the guest caller's ids) every uid/gid-changing call too, becomes a
user notification that the shim answers (qemu/ownerguard.py): the jail
sends the filter's listener fd over the socket named by
`$KATA_SHIM_OWNER_GUARD_FD` (or connected to the path after `--guard-socket`,
when libvirt starts QEMU), closes its copies, then execs.
Without that variable (QEMU launched by hand, as benches and tests do) every
such call fails with EPERM instead.
A seccomp() call asking for a new listener fails with EPERM, so QEMU cannot
stack a filter of its own that would answer those notifications first.
Everything else is allowed; QEMU's own `-sandbox` filter stacks on top.
Rules go through libseccomp (ctypes).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import sys

from kata_shim.sandbox.qemu.notify import ACT_NOTIFY, libseccomp
from kata_shim.sandbox.qemu.ownerguard import (
    CHOWN_ARGS,
    GUARD_FD_ENV,
    GUARD_SOCKET_OPTION,
    SETID_ARGS,
)

__all__ = ["PRIVILEGED_MODE_RULES", "TRAP_SETID_OPTION", "hand_over", "install_filter", "main"]

ACT_ALLOW = 0x7FFF0000
CMP_MASKED_EQ = 7
FILE_TYPE_MASK = 0o170000  # S_IFMT
USAGE = (
    "python -m kata_shim.sandbox.qemu.jail [--trap-setid] [--guard-socket PATH] "
    "-- program [args...]"
)
#: also trap the setuid family for the guard (virtiofsd; QEMU has no CAP_SETUID anyway)
TRAP_SETID_OPTION = "--trap-setid"
FILTER_FLAG_NEW_LISTENER = 1 << 3  # SECCOMP_FILTER_FLAG_NEW_LISTENER, seccomp()'s arg 1

#: syscall → index of its mode argument
PRIVILEGED_MODE_RULES = {
    "chmod": 1,
    "fchmod": 1,
    "fchmodat": 2,
    "open": 2,
    "openat": 3,
    "creat": 1,
}
DEVICE_RULES = {"mknod": 1, "mknodat": 2}


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def _add_rule(ctx: int, action: int, name: str, cmp: _ArgCmp | None = None) -> None:
    lib = libseccomp()
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number < 0:  # not on this architecture
        return
    count, pointer = (1, ctypes.byref(cmp)) if cmp is not None else (0, None)
    result = lib.seccomp_rule_add_array(ctypes.c_void_p(ctx), action, number, count, pointer)
    if result != 0:
        raise OSError(-result, f"seccomp rule for {name}: {os.strerror(-result)}")


def _deny_when(ctx: int, name: str, arg: int, mask: int, value: int) -> None:
    _add_rule(ctx, _errno_action(errno.EPERM), name, _ArgCmp(arg, CMP_MASKED_EQ, mask, value))


def _add_rules(ctx: int, guarded: bool, setid: bool) -> None:
    for name, arg in PRIVILEGED_MODE_RULES.items():
        for bit in (stat.S_ISUID, stat.S_ISGID):
            _deny_when(ctx, name, arg, bit, bit)
    for name, arg in DEVICE_RULES.items():
        for kind in (stat.S_IFCHR, stat.S_IFBLK):
            _deny_when(ctx, name, arg, FILE_TYPE_MASK, kind)
    _add_rule(ctx, _errno_action(errno.ENOSYS), "openat2")
    trapped_action = ACT_NOTIFY if guarded else _errno_action(errno.EPERM)
    for name in CHOWN_ARGS | (SETID_ARGS if setid else {}):
        _add_rule(ctx, trapped_action, name)
    flag = FILTER_FLAG_NEW_LISTENER
    _deny_when(ctx, "seccomp", 1, flag, flag)


def install_filter(guarded: bool = True, setid: bool = False) -> int:
    """Load the filter into this process (inherited across exec); return its listener fd
    (`guarded`), or -1 when every chown fails with EPERM instead (no guard to answer)."""
    lib = libseccomp()
    ctx = lib.seccomp_init(ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        _add_rules(ctx, guarded, setid)
        result = lib.seccomp_load(ctypes.c_void_p(ctx))
        if result != 0:
            raise OSError(-result, f"seccomp_load: {os.strerror(-result)}")
        if not guarded:
            return -1
        listener = lib.seccomp_notify_fd(ctypes.c_void_p(ctx))
        if listener < 0:
            raise OSError(-listener, f"seccomp_notify_fd: {os.strerror(-listener)}")
        return int(listener)
    finally:
        lib.seccomp_release(ctypes.c_void_p(ctx))


def hand_over(guard_fd: int, listener: int) -> None:
    """Send `listener` over the socket `guard_fd` (SCM_RIGHTS), then close both here."""
    with socket.socket(fileno=guard_fd) as guard:
        socket.send_fds(guard, [b"seccomp-listener"], [listener])
    os.close(listener)


def _guard_fd(options: list[str]) -> int:
    """The guard socket's fd: inherited (`$KATA_SHIM_OWNER_GUARD_FD`) or connected to the
    path after `--guard-socket` (QEMU started by libvirt); -1 when there is none."""
    inherited = os.environ.pop(GUARD_FD_ENV, "")
    if options[:1] == [GUARD_SOCKET_OPTION] and len(options) == 2:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(options[1])
        except OSError as exc:  # the shim is gone or the path is wrong: QEMU must not run
            sock.close()
            sys.exit(f"kata-shim jail: cannot reach the owner guard at {options[1]} ({exc})")
        return sock.detach()
    if options:
        sys.exit(f"kata-shim jail: unknown options {options}; usage: {USAGE}")
    return int(inherited) if inherited.isdigit() else -1


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args or args.index("--") == len(args) - 1:
        sys.exit(f"usage: {USAGE}")
    split = args.index("--")
    options, args = args[:split], args[split + 1 :]
    setid = TRAP_SETID_OPTION in options[:1]
    options = options[setid:]
    try:
        guard = _guard_fd(options)
        if guard >= 0:
            hand_over(guard, install_filter(setid=setid))
        else:  # launched by hand (benches, tests): nobody answers, so chowns just fail
            install_filter(guarded=False, setid=setid)
    except OSError as exc:  # QEMU's log, then the shim's error, carries this line
        sys.exit(f"kata-shim jail: cannot load QEMU's seccomp filter ({exc}); install libseccomp2")
    os.execv(args[0], args)


if __name__ == "__main__":
    main()
