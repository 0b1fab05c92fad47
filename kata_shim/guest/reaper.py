"""Child reaping for the agent: one SIGCHLD-driven waitpid(-1) loop owns every exit.

The agent is a child subreaper, so container processes (whose runc parent has
exited) are reparented to it. Nothing else may call waitpid — no
subprocess.Popen.wait/run, no asyncio child watcher — or exit codes would be
lost (ECHILD). Exits of pids nobody waits for yet are stashed (bounded),
because a process may exit before its pid file has been read. Codes are the
exit status, or 128+signal for signalled processes.
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
STASH_LIMIT = 4096


def set_child_subreaper(enable: bool = True) -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are reparented to us."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(enable), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def exit_code(status: int) -> int:
    """waitpid status → shell-style code (128+signal for signalled processes)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Reaper:
    """Hands each reaped child's exit code to whoever awaits that pid.

    Runs entirely on the event loop thread (SIGCHLD → loop callback), so its
    tables need no lock.
    """

    def __init__(self) -> None:
        self._waiters: dict[int, asyncio.Future[int]] = {}
        # exits nobody asked for yet, oldest first (bounded by STASH_LIMIT)
        self._unclaimed: OrderedDict[int, int] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def stashed(self) -> int:
        return len(self._unclaimed)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def install(self, loop: asyncio.AbstractEventLoop, *, subreaper: bool = True) -> None:
        """Become subreaper (unless told not to) and reap on every SIGCHLD."""
        if subreaper:
            set_child_subreaper()
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()  # children that exited before the handler was installed

    def uninstall(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def reap(self) -> None:
        """Collect every exited child (one SIGCHLD may stand for many exits)."""
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
        log.debug("pid %d exited with %d before anyone asked", pid, code)
        self._unclaimed[pid] = code
        while len(self._unclaimed) > STASH_LIMIT:
            self._unclaimed.popitem(last=False)

    def exited(self, pid: int) -> asyncio.Future[int]:
        """A future resolving to `pid`'s exit code (at once if it already exited).

        Every caller for the same pid shares one future.
        """
        future = self._waiters.get(pid)
        if future is not None:
            return future
        future = asyncio.get_running_loop().create_future()
        code = self._unclaimed.pop(pid, None)
        if code is not None:
            future.set_result(code)
        else:
            self._waiters[pid] = future
        return future
