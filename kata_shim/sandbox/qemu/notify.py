"""libseccomp's user-notification API through ctypes: receive a trapped syscall, answer it.

A seccomp filter whose action is SCMP_ACT_NOTIFY (SECCOMP_RET_USER_NOTIF)
stops the calling thread and queues a notification on the filter's listener
fd; whoever holds that fd (here: the shim, qemu/ownerguard.py) reads the
syscall number and its six integer arguments and answers with an errno or
with SECCOMP_USER_NOTIF_FLAG_CONTINUE (the kernel then runs the call as
made). The structs follow the kernel uapi `linux/seccomp.h` (seccomp_data,
seccomp_notif, seccomp_notif_resp); libseccomp allocates them at the size
the running kernel reports, so only their common prefix is read here.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from functools import cache

__all__ = ["ACT_NOTIFY", "Call", "Listener", "libseccomp", "native_arch"]

#: SCMP_ACT_NOTIFY (= SECCOMP_RET_USER_NOTIF)
ACT_NOTIFY = 0x7FC00000
#: SECCOMP_USER_NOTIF_FLAG_CONTINUE
FLAG_CONTINUE = 1


class _SeccompData(ctypes.Structure):
    _fields_ = [
        ("nr", ctypes.c_int32),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    ]


class _Notif(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", _SeccompData),
    ]


class _NotifResp(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    ]


@dataclass(frozen=True, slots=True)
class Call:
    """One trapped syscall: its notification id, the caller's pid, number, arch, arguments."""

    id: int
    pid: int
    nr: int
    arch: int
    args: tuple[int, ...]


@cache
def libseccomp() -> ctypes.CDLL:
    """libseccomp.so.2 with the prototypes used here (CDLL: the GIL is released in calls)."""
    lib = ctypes.CDLL("libseccomp.so.2")
    if not hasattr(lib, "seccomp_notify_fd"):  # added in libseccomp 2.5
        raise OSError(errno.ENOSYS, "libseccomp.so.2 has no user-notification API (< 2.5)")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_notify_alloc.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.seccomp_notify_free.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.seccomp_notify_receive.argtypes = [ctypes.c_int, ctypes.c_void_p]
    lib.seccomp_notify_respond.argtypes = [ctypes.c_int, ctypes.c_void_p]
    lib.seccomp_notify_fd.argtypes = [ctypes.c_void_p]
    return lib


def native_arch() -> int:
    """The AUDIT_ARCH_* token of this machine (what `Call.arch` holds for native calls)."""
    return int(libseccomp().seccomp_arch_native())


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(-result, f"{what}: {os.strerror(-result)}")


class Listener:
    """A seccomp listener fd (owned: `close` closes it) and its request/response buffers."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._req = ctypes.POINTER(_Notif)()
        self._resp = ctypes.POINTER(_NotifResp)()
        _check(
            libseccomp().seccomp_notify_alloc(ctypes.byref(self._req), ctypes.byref(self._resp)),
            "seccomp_notify_alloc",
        )

    def receive(self) -> Call:
        """The next notification (blocks until one is queued; OSError when it vanished)."""
        ctypes.memset(self._req, 0, ctypes.sizeof(_Notif))  # the kernel wants it zeroed
        _check(libseccomp().seccomp_notify_receive(self.fd, self._req), "seccomp_notify_receive")
        req = self._req.contents
        data = req.data
        return Call(req.id, req.pid, data.nr, data.arch, tuple(data.args))

    def respond(self, call_id: int, error: int | None) -> None:
        """Run the call as made (`error` None) or fail it with `error` (an errno)."""
        resp = self._resp.contents
        ctypes.memset(self._resp, 0, ctypes.sizeof(_NotifResp))
        resp.id = call_id
        if error is None:
            resp.flags = FLAG_CONTINUE
        else:
            resp.error = -error
        _check(libseccomp().seccomp_notify_respond(self.fd, self._resp), "seccomp_notify_respond")

    def close(self) -> None:
        if self.fd >= 0:
            libseccomp().seccomp_notify_free(self._req, self._resp)
            os.close(self.fd)
            self.fd = -1
