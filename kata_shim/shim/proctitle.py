"""Give a forked daemon the command line and name a cold-exec'd one would have.

`delete` (procs.is_our_shim), `ps` and operators identify a shim daemon by its
/proc/<pid>/cmdline (`containerd-shim-kata-v2 -namespace … -id …`). A child
forked from the fork server starts with the server's. We point the kernel's
argument area at a buffer we own with prctl(PR_SET_MM, PR_SET_MM_MAP) — the
one PR_SET_MM form that needs no CAP_SYS_RESOURCE when the executable is kept
— and set the comm name (PR_SET_NAME). Failure is reported: the fork server
then refuses and `start` falls back to a cold exec, so a daemon is never left
unidentifiable.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["TitleError", "set_title"]

PR_SET_NAME = 15
PR_SET_MM = 35
PR_SET_MM_MAP = 14
COMM_LIMIT = 15
KEEP_EXE = 0xFFFFFFFF  # exe_fd = -1: leave /proc/self/exe alone (no capability needed)

_libc = ctypes.CDLL(None, use_errno=True)
_ulong = ctypes.c_ulong
_libc.prctl.argtypes = [ctypes.c_int, _ulong, ctypes.c_void_p, _ulong, _ulong]
_libc.prctl.restype = ctypes.c_int
_libc.sbrk.argtypes = [ctypes.c_long]
_libc.sbrk.restype = ctypes.c_void_p
_kept: list[ctypes.Array[ctypes.c_char]] = []  # the argument area must outlive the process


_MM_FIELDS = (
    "start_code",
    "end_code",
    "start_data",
    "end_data",
    "start_brk",
    "brk",
    "start_stack",
    "arg_start",
    "arg_end",
    "env_start",
    "env_end",
)


class _MmMap(ctypes.Structure):
    """struct prctl_mm_map (linux/prctl.h)."""

    _fields_ = (
        *((name, ctypes.c_uint64) for name in _MM_FIELDS),
        ("auxv", ctypes.c_void_p),
        ("auxv_size", ctypes.c_uint32),
        ("exe_fd", ctypes.c_uint32),
    )


class TitleError(OSError):
    """The kernel refused the new argument area."""


def _stat_layout() -> dict[str, int]:
    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    # proc(5) field n is fields[n - 3]
    names = {
        "start_code": 26,
        "end_code": 27,
        "start_stack": 28,
        "start_data": 45,
        "end_data": 46,
        "start_brk": 47,
        "env_start": 50,
        "env_end": 51,
    }
    return {name: int(fields[number - 3]) for name, number in names.items()}


def _set_args(start: int, end: int) -> None:
    layout = _stat_layout()
    mm = _MmMap(**layout, arg_start=start, arg_end=end, auxv=None, auxv_size=0, exe_fd=KEEP_EXE)
    for _ in range(3):  # brk may move between reading it and the call: check, retry
        mm.brk = _libc.sbrk(0) or 0
        if _libc.prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.addressof(mm), ctypes.sizeof(mm), 0):
            errno = ctypes.get_errno()
            raise TitleError(errno, f"prctl(PR_SET_MM_MAP): {os.strerror(errno)}")
        if (_libc.sbrk(0) or 0) == mm.brk:
            return
    raise TitleError(0, "the program break kept moving")


def set_title(argv: list[str]) -> None:
    """Make /proc/self/cmdline read `argv` and /proc/self/comm its program's base name."""
    raw = b"\0".join(arg.encode() for arg in argv) + b"\0"
    buffer = ctypes.create_string_buffer(raw, len(raw))
    _kept.append(buffer)
    start = ctypes.addressof(buffer)
    _set_args(start, start + len(raw))
    name = ctypes.create_string_buffer(os.path.basename(argv[0]).encode()[:COMM_LIMIT])
    if _libc.prctl(PR_SET_NAME, ctypes.addressof(name), None, 0, 0):
        errno = ctypes.get_errno()
        raise TitleError(errno, f"prctl(PR_SET_NAME): {os.strerror(errno)}")
