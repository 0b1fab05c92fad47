"""Host paths below a trusted directory, resolved without ever following a symlink.

A VM's share directory is writable by the guest (through the 9p server), so a
path below it is the guest's to rewrite: any component may become a symlink
to a host file at any moment. Everything here therefore works on fds:
`walk` opens one component at a time with O_NOFOLLOW (what
openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) does in one call, which
openEuler's 5.10 kernels have but Python's os module does not expose),
`mount_id` reads the fd's mount ID, and `bind`, `remount`, `make_private`,
`move` and `detach` act on `/proc/self/fd/<n>`, the exact object an fd holds — never on a
path string the guest could have altered since it was checked.
mount(2)/umount2(2) come from libc through ctypes (not in the os module).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from collections.abc import Iterator, Sequence
from functools import cache

__all__ = [
    "MS_NODEV",
    "MS_NOSUID",
    "MS_RDONLY",
    "bind",
    "check_component",
    "detach",
    "fd_path",
    "make_private",
    "mount_id",
    "move",
    "opened",
    "remount",
    "walk",
]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_PRIVATE = 0x40000
MS_SHARED = 0x100000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def check_component(value: str) -> bool:
    """True when `value` is one plain path component (no '/', '.', '..' or NUL)."""
    return bool(value) and value not in (".", "..") and "/" not in value and "\0" not in value


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def walk(root_fd: int, parts: Sequence[str], *, directory: bool = False) -> int:
    """An O_PATH fd for `root_fd/parts...`; OSError(ELOOP) when any component is a symlink."""
    fd = os.dup(root_fd)
    try:
        for index, part in enumerate(parts):
            if not check_component(part):
                raise OSError(22, f"unsafe path component {part!r}")
            last = index == len(parts) - 1
            flags = _PATH if last and not directory else _PATH | os.O_DIRECTORY
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(40, f"{part!r} is a symbolic link")
    except BaseException:
        os.close(fd)
        raise
    return fd


def mount_id(fd: int) -> int:
    """The mount ID (as in /proc/self/mountinfo) of the file system object `fd` holds."""
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(2, f"no mnt_id for fd {fd}")


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # the interpreter's own libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def bind(source_fd: int, target_fd: int) -> None:
    """Bind-mount what `source_fd` holds onto what `target_fd` holds."""
    source, target = fd_path(source_fd).encode(), fd_path(target_fd).encode()
    _check(_libc().mount(source, target, None, MS_BIND, None), "bind mount")


def remount(fd: int, flags: int) -> None:
    """Remount the bind mount whose root `fd` holds with `flags` (MS_RDONLY, MS_NOSUID, ...)."""
    target = fd_path(fd).encode()
    _check(_libc().mount(None, target, None, MS_REMOUNT | MS_BIND | flags, None), "remount")


def make_private(fd: int) -> None:
    """Make the mount whose root `fd` holds private: nothing mounted below it propagates."""
    target = fd_path(fd).encode()
    _check(_libc().mount(None, target, None, MS_PRIVATE, None), "make private")


def make_shared(fd: int) -> None:
    """Make the mount whose root `fd` holds shared: what is mounted below it later also
    appears in its peers and slaves (another mount namespace's copy of it)."""
    target = fd_path(fd).encode()
    _check(_libc().mount(None, target, None, MS_SHARED, None), "make shared")


def move(source_fd: int, target_fd: int) -> None:
    """Move the mount whose root `source_fd` holds onto what `target_fd` holds (MS_MOVE).

    The mount keeps its ID and flags; where the target's mount is shared, the
    copies propagated to its peers and slaves carry the same flags.
    """
    source, target = fd_path(source_fd).encode(), fd_path(target_fd).encode()
    _check(_libc().mount(source, target, None, MS_MOVE, None), "move mount")


def detach(fd: int) -> None:
    """Lazily unmount the mount whose root `fd` holds (umount2 MNT_DETACH)."""
    _check(_libc().umount2(fd_path(fd).encode(), MNT_DETACH), "umount")
