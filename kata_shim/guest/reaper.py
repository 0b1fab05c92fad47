"""Child reaping for the agent: one SIGCHLD-driven waitpid(-1) loop owns every exit.

The agent is a child subreaper, so container processes (whose runc parent has
exited) are reparented to it. Nothing else may call waitpid — no
subprocess.Popen.wait, no asyncio child watcher — or exit codes would be lost.
Exits of pids nobody waits for yet are stashed, because a process may exit
before its pid file has been read. Codes are the exit status, or 128+signal.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
from collections import OrderedDict

__all__ = ["Reaper", "exit_code", "set_child_subreaper"]

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
_STASH_LIMIT = 4096


def set_child_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def exit_code(status: int) -> int:
    """waitpid status → shell-style code (128+signal for signalled processes)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Reaper:
    """Hands each reaped child's exit code to whoever awaits that pid."""

    def __init__(self) -> None:
        self._waiters: dict[int, asyncio.Future[int]] = {}
        # exits nobody asked for yet, oldest first (bounded)
        self._unclaimed: OrderedDict[int, int] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        set_child_subreaper()
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # children that exited before the handler was installed

    def uninstall(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._deliver(pid, exit_code(status))

    def _deliver(self, pid: int, code: int) -> None:
        waiter = self._waiters.pop(pid, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(code)
            return
        self._unclaimed[pid] = code
        while len(self._unclaimed) > _STASH_LIMIT:
            self._unclaimed.popitem(last=False)

    def exited(self, pid: int) -> asyncio.Future[int]:
        """A future resolving to `pid`'s exit code (at once if it already exited)."""
        future = asyncio.get_running_loop().create_future()
        code = self._unclaimed.pop(pid, None)
        if code is not None:
            future.set_result(code)
        else:
            self._waiters[pid] = future
        return future
