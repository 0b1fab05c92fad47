"""Serve mode (no action): the long-running shim daemon `start` spawned.

Order: cwd = bundle, stdout → /dev/null, logging → `<bundle>/log` (so that
even an import failure is logged), then the heavy imports (daemon.py) and the
uvloop event loop until Shutdown or SIGTERM/SIGINT. Exit status 0 after an
orderly stop, 1 when the daemon failed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from kata_shim.shim.flags import Flags
from kata_shim.shim.logging_setup import setup_logging

__all__ = ["run_serve"]

log = logging.getLogger(__name__)


def _detach_stdout() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def _catch_early_signals() -> list[int]:
    """Record SIGTERM/SIGINT that arrive before the event loop takes them over."""
    caught: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        signal.signal(signum, record)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)  # `start` spawned us with them blocked
    return caught


def run_serve(flags: Flags) -> int:
    """Run the daemon until Shutdown or a signal; return the exit status."""
    bundle = os.path.abspath(flags.bundle or os.getcwd())
    if flags.bundle:
        os.chdir(bundle)
    _detach_stdout()
    early_signals = _catch_early_signals()
    setup_logging(bundle, flags.namespace, flags.id, flags.debug)
    try:
        import asyncio

        import uvloop

        from kata_shim.shim.daemon import Daemon

        daemon = Daemon(flags, bundle, early_signals)
        # asyncio.Runner, not uvloop.run(): that exists only from uvloop 0.18 (Debian 12 has 0.17)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(daemon.run())
    except Exception:
        log.exception("shim daemon failed")
        return 1
    log.info("exited (%s)", "signal" if daemon.signalled else "Shutdown")
    return 0
