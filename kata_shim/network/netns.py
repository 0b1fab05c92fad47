"""Run a function inside a network namespace without moving the calling thread.

Linux network namespaces are per thread: a short-lived worker thread setns()es
into the namespace, runs the function and ends, so the shim's event loop and
its other threads never change namespace. Netlink sockets and /dev/net/tun
devices opened there stay bound to that namespace (their fds outlive the thread).
Python 3.11 has no os.setns, hence the libc call.
"""

from __future__ import annotations

import ctypes
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kata_shim.errors import InvalidArgument

__all__ = ["CLONE_NEWNET", "check_netns_path", "is_own_netns", "run_in_netns"]

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)  # our own libc; find_library would run ldconfig


def check_netns_path(path: Path) -> None:
    """Raise InvalidArgument unless `path` names a network namespace file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InvalidArgument(
            f"network namespace {path} does not exist: the pod's netns must be created "
            "(by CRI/CNI or `ip netns add`) before the sandbox starts"
        ) from None
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISCHR(st.st_mode):
        raise InvalidArgument(f"network namespace {path} is not a namespace file (nsfs)")


def is_own_netns(path: Path) -> bool:
    """True if `path` is the network namespace this process runs in (the host's, usually)."""
    own = os.stat("/proc/thread-self/ns/net")
    target = os.stat(path)
    return (own.st_dev, own.st_ino) == (target.st_dev, target.st_ino)


def _enter(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise InvalidArgument(
                f"cannot enter network namespace {path}: {os.strerror(err)} "
                "(is it a network namespace file, e.g. /run/netns/<name>?)"
            )
    finally:
        os.close(fd)


def run_in_netns(path: Path, fn: Callable[[], T]) -> T:
    """fn() run in a fresh thread that joined the network namespace at `path`."""
    check_netns_path(path)
    result: list[T] = []
    error: list[BaseException] = []

    def worker() -> None:
        try:
            _enter(path)
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller
            error.append(exc)

    thread = threading.Thread(target=worker, name=f"netns:{path.name}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
