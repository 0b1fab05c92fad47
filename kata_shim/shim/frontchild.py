"""The server-side half of the C front (csrc/shimfront.c): run `start`/`delete` warm.

Runs in the fork server's child (forkchild.serve_request), for a request
  b"KSF1\\0" cwd \\0 argc \\0 argv[0..argc-1] \\0... environ \\0...
with the front's fds 0, 1, 2. Before anything runs we check it (the action is
`start` or `delete`, the flags parse, `-address` is our containerd's) and
become the process a cold exec would have been: those fds as stdio, nothing
else open but the connection (close-on-exec), the front's cgroups, cwd,
environment, argv and command line, a fresh interpreter's signal state. Then
"R" to the front; the action runs only after its "G" (a front that gave up
has closed the connection: we leave without running it, and it falls back to
Python). Any refusal before "R" is a JSON {"error"} — the front falls back.
At the end "X<status>" carries main's exit status; every exit is os._exit.
`start` forks its daemon right here (fork_daemon: one fork, no second trip to
the server), set up exactly like a server-forked one (forkchild.become_daemon).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import traceback
from typing import Any, NoReturn

from kata_shim.shim import forkproto, proctitle
from kata_shim.shim.flags import FlagError, parse_flags, require_ids

__all__ = ["MAGIC", "FrontRequest", "parse_request", "run_action"]

MAGIC = b"KSF1\0"
ACTIONS = ("start", "delete")
CONN_FD = 3
GO_TIMEOUT = 10.0
_RESET_SIGNALS = (signal.SIGXFSZ, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)
_log = [""]  # the server's log (fork_daemon's notes)


class FrontRequest:
    """The front's command line, working directory and environment."""

    __slots__ = ("argv", "cwd", "env")

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        self.argv = argv
        self.cwd = cwd
        self.env = env


def parse_request(data: bytes) -> FrontRequest:
    """Decode a front request; ValueError names what is wrong."""
    if not data.startswith(MAGIC) or not data.endswith(b"\0"):
        raise ValueError("not a front request")
    fields = [os.fsdecode(field) for field in data[len(MAGIC) : -1].split(b"\0")]
    if len(fields) < 2 or not fields[1].isdigit():
        raise ValueError("front request without cwd and argc")
    argc = int(fields[1])
    if argc < 1 or len(fields) < 2 + argc:
        raise ValueError(f"front request with argc {argc} but {len(fields) - 2} strings")
    env = dict(entry.split("=", 1) for entry in fields[2 + argc :] if "=" in entry)
    return FrontRequest(fields[2 : 2 + argc], fields[0], env)


def _check(request: FrontRequest, fds: list[int], context: dict[str, Any]) -> None:
    """Raise ValueError/FlagError unless this is a start/delete we run exactly as Python would."""
    if len(fds) != 3:
        raise ValueError(f"expected 3 fds (stdio), got {len(fds)}")
    flags = parse_flags(request.argv[1:])
    require_ids(flags)
    if flags.action not in ACTIONS or flags.help or flags.version:
        raise ValueError(f"not an action the front forwards: {request.argv[1:]!r}")
    if flags.address != context["address"]:
        raise ValueError(f"-address {flags.address} is not this server's {context['address']}")


def _set_fds(stdio: list[int], conn: int) -> None:
    """stdio → 0-2 (inheritable), the connection → 3 (close-on-exec); all else closed."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in (*stdio, conn)]
    for target in (0, 1, 2):
        os.dup2(high[target], target)
    os.dup2(high[3], CONN_FD, inheritable=False)
    os.closerange(CONN_FD + 1, os.sysconf("SC_OPEN_MAX"))


def _become_caller(request: FrontRequest, caller: int, context: dict[str, Any]) -> None:
    from kata_shim.shim.forkchild import join_cgroups

    problems = join_cgroups(caller)
    os.chdir(request.cwd)
    forkproto.replace_environ(request.env)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in _RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = list(request.argv)
    with contextlib.suppress(Exception):  # `ps` nicety only: no daemon is recognised by it
        proctitle.set_title(sys.argv)
    if problems:
        forkproto.note(context["log"], f"front child {os.getpid()}: cgroup: {'; '.join(problems)}")


def _handshake(conn: socket.socket) -> bool:
    """ "R" → front, wait for its "G"; False when it gave up (then nothing may run)."""
    try:
        conn.sendall(b"R")
        conn.settimeout(GO_TIMEOUT)
        return conn.recv(16) == b"G"
    except OSError:
        return False


def fork_daemon(argv: list[str], args: list[str], cwd: str, listener: socket.socket) -> int:
    """`start`'s daemon forked from this warm process, set up as the server would (forkchild)."""
    from kata_shim.shim.forkchild import become_daemon

    request = {"argv": argv, "args": args, "cwd": cwd, "env": dict(os.environ), "log": _log[0]}
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:
            become_daemon(request, os.getppid(), [listener.fileno(), devnull], theirs.detach())
        theirs.close()
        ours.settimeout(forkproto.REPLY_TIMEOUT)
        reply, _ = forkproto.receive_message(ours)
        if reply.get("pid") != pid:
            raise forkproto.ForkUnavailable(f"daemon {pid} answered {reply!r}")
        ours.sendall(forkproto.GO)
        return pid
    except OSError as exc:
        raise forkproto.ForkUnavailable(f"exchange failed: {exc}") from None
    finally:
        os.close(devnull)
        ours.close()


def _run(argv: list[str]) -> int:
    from kata_shim.shim.main import main

    try:
        return main(argv)
    except BaseException:  # report like an uncaught exception would, keep our own exit
        traceback.print_exc()
        return 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()


def run_action(
    conn: socket.socket, data: bytes, fds: list[int], caller: int, context: dict[str, Any]
) -> NoReturn:
    """Check, set up, hand over, run the action, report its status; never returns."""
    try:
        request = parse_request(data)
        _check(request, fds, context)
        _set_fds(fds, conn.fileno())
        conn.detach()
        conn = socket.socket(fileno=CONN_FD)
        _become_caller(request, caller, context)
    except (ValueError, FlagError, OSError) as exc:
        with contextlib.suppress(OSError, forkproto.ForkUnavailable):
            forkproto.send_message(conn, {"error": f"front request refused: {exc}"})
        os._exit(1)
    if not _handshake(conn):
        os._exit(0)
    from kata_shim.shim import start

    _log[0] = context["log"]
    start.daemon_forker = fork_daemon
    status = _run(request.argv[1:])
    with contextlib.suppress(OSError):
        conn.sendall(b"X%d" % status)
    os._exit(0)
