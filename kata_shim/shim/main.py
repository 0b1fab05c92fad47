"""Entry point of containerd-shim-kata-v2 (console script → kata_shim.shim.main:main).

Parses the flags and runs one action: `start` (print the daemon's address),
`delete` (clean up, print a DeleteResponse) or none (serve). Each action's
module is imported only when chosen, so `start` and `delete` never load
asyncio, uvloop or protobuf. Exit status: 0 on success, 1 on any failure
(the message goes to stderr; stdout carries only the action's result). The
daemon leaves with os._exit once its teardown is done (no finalization).
"""

from __future__ import annotations

import os
import sys

from kata_shim.shim.flags import USAGE, FlagError, Flags, parse_flags, require_ids

__all__ = ["PROG", "main", "version_line"]

PROG = "containerd-shim-kata-v2"


def version_line() -> str:
    from kata_shim import __version__

    return f"{PROG} (kata-shim) {__version__}"


def _ensure_std_fds() -> None:
    """Open /dev/null on any of fds 0-2 that is closed, so sockets never land there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _fail(action: str, exc: BaseException) -> int:
    sys.stderr.write(f"{PROG}: {action} failed: {exc}\n")
    sys.stderr.flush()
    return 1


def _run_start(flags: Flags) -> int:
    from kata_shim.shim.start import start

    try:
        address = start(flags)
    except Exception as exc:
        return _fail("start", exc)
    os.write(1, address.encode())  # no newline: iSulad uses stdout verbatim
    return 0


def _run_delete(flags: Flags) -> int:
    from kata_shim.shim.delete import delete, response_bytes

    try:
        response = delete(flags)
    except Exception as exc:  # cleanup problems are warnings: containerd must still proceed
        sys.stderr.write(f"{PROG}: delete: {type(exc).__name__}: {exc}\n")
        response = response_bytes()
    os.write(1, response)
    return 0


def _run_serve(flags: Flags) -> int:
    import logging

    from kata_shim.shim.serve import run_serve

    status = run_serve(flags)
    # Teardown is complete and logged. Skip the interpreter's finalization (tens of
    # ms of module/object teardown, more under load): containerd's `delete` action,
    # which every `ctr run --rm` waits for, waits for this process to be gone.
    logging.shutdown()
    os._exit(status)


_ACTIONS = {"start": _run_start, "delete": _run_delete, "serve": _run_serve}


def main(argv: list[str] | None = None) -> int:
    """Run the shim with `argv` (default: sys.argv[1:]); return the exit status."""
    _ensure_std_fds()
    try:
        flags = parse_flags(sys.argv[1:] if argv is None else argv)
        if flags.help:
            sys.stdout.write(USAGE)
            return 0
        if flags.version:
            sys.stdout.write(version_line() + "\n")
            return 0
        require_ids(flags)
    except FlagError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n{USAGE}")
        return 1
    return _ACTIONS[flags.action](flags)


if __name__ == "__main__":
    sys.exit(main())
