"""What the `local` backend's agent does, at start, to stand for a pod like a VM does.

On the host the agent is a process, not a VM, so it makes itself the pod's
boundary before it serves: it joins the pod's network namespace (`--netns`,
the sandbox container's `linux.namespaces[type=network].path`, made by CNI)
and takes a UTS namespace of its own (`--local-pod`), in which CreateSandbox
sets the pod's hostname, so the agent never renames the host. Every container
it starts without a network namespace of its own inherits the pod's. The
pod's shared IPC/UTS/PID namespaces and /dev/shm are made at CreateSandbox,
the same code as in a VM (guest/sandbox.py, guest/podns.py). Call before any
thread or event loop exists: namespaces are per thread, and threads started
later inherit them.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

__all__ = ["CLONE_NEWNET", "CLONE_NEWUTS", "enter_pod_namespaces"]

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000

_libc = ctypes.CDLL(None, use_errno=True)  # our own libc; find_library would run ldconfig


def _failed(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def enter_pod_namespaces(netns: Path | None, own_uts: bool) -> None:
    """Join the network namespace at `netns` (if given); unshare UTS when `own_uts`
    (the local backend's agent)."""
    if netns is not None:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise _failed(f"cannot join network namespace {netns}")
        finally:
            os.close(fd)
    if own_uts and _libc.unshare(CLONE_NEWUTS) != 0:
        raise _failed("cannot make the pod's UTS namespace")
