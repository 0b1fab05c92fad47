"""`python -m kata_shim.sandbox.qemu.jail -- argv...`: exec argv (QEMU) under our seccomp filter.

The 9p server passes the guest's file modes through to the host (QEMU's
`mapped-xattr` model would keep them in xattrs instead, but cannot read a
symlink that already exists on the host, which every container image has).
So the file server itself is kept from giving a host file privilege: this
filter makes QEMU's chmod-family and create calls fail with EPERM whenever
the mode carries a setuid or setgid bit, and mknod of a character or block
device fail likewise (besides QEMU lacking CAP_MKNOD, confine.py). openat2,
whose mode sits in a struct a filter cannot inspect, fails with ENOSYS (glibc
and QEMU fall back to openat). Everything else is allowed; QEMU's own
`-sandbox` filter stacks on top. Rules go through libseccomp (ctypes).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys

__all__ = ["PRIVILEGED_MODE_RULES", "install_filter", "main"]

ACT_ALLOW = 0x7FFF0000
CMP_MASKED_EQ = 7
FILE_TYPE_MASK = 0o170000  # S_IFMT

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


def _deny_when(lib: ctypes.CDLL, ctx: int, name: str, arg: int, mask: int, value: int) -> None:
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number < 0:  # not on this architecture
        return
    cmp = _ArgCmp(arg, CMP_MASKED_EQ, mask, value)
    result = lib.seccomp_rule_add_array(
        ctypes.c_void_p(ctx), _errno_action(errno.EPERM), number, 1, ctypes.byref(cmp)
    )
    if result != 0:
        raise OSError(-result, f"seccomp rule for {name}: {os.strerror(-result)}")


def install_filter() -> None:
    """Load the filter into this process (inherited across exec)."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    ctx = lib.seccomp_init(ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    for name, arg in PRIVILEGED_MODE_RULES.items():
        for bit in (stat.S_ISUID, stat.S_ISGID):
            _deny_when(lib, ctx, name, arg, bit, bit)
    for name, arg in DEVICE_RULES.items():
        for kind in (stat.S_IFCHR, stat.S_IFBLK):
            _deny_when(lib, ctx, name, arg, FILE_TYPE_MASK, kind)
    openat2 = lib.seccomp_syscall_resolve_name(b"openat2")
    if openat2 >= 0:
        lib.seccomp_rule_add_array(ctypes.c_void_p(ctx), _errno_action(errno.ENOSYS), openat2, 0)
    result = lib.seccomp_load(ctypes.c_void_p(ctx))
    lib.seccomp_release(ctypes.c_void_p(ctx))
    if result != 0:
        raise OSError(-result, f"seccomp_load: {os.strerror(-result)}")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: python -m kata_shim.sandbox.qemu.jail -- program [args...]")
    try:
        install_filter()
    except OSError as exc:  # QEMU's log, then the shim's error, carries this line
        sys.exit(f"kata-shim jail: cannot load QEMU's seccomp filter ({exc}); install libseccomp2")
    os.execv(args[0], args)


if __name__ == "__main__":
    main()
