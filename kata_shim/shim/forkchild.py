"""The forked side of the fork server: read the request, become one pod's shim daemon.

serve_request reads the connection the server accepted (never the server
itself: it forked first) and dispatches: a C front's action → frontchild.py;
Python `start`'s JSON daemon request (its build must be the server's, else the
server is retired: an older package asked) → become_daemon below.

become_daemon runs in a grandchild of the server (its parent exits at once,
so the daemon is re-parented exactly as a cold-exec'd one is after `start`
exits: to containerd, its subreaper, or init) or in a child of the front's
`start` (frontchild.fork_daemon; that `start` exits right after). In order:
own session, the caller's cgroups, cwd, environment, signal state of a fresh exec, stdio and
the listener on fds 0-3 (everything else closed: the server's socket, its
lock, the connection we answer on is the only extra), the daemon's command
line; then {"pid"} to `start`, and only after its "go" the daemon proper —
which creates its event loop now, in this process (the server never had one).
Every exit is os._exit: nothing of the server's state is finalized here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
from typing import Any

from kata_shim.shim import forkproto, proctitle, zygote

__all__ = ["become_daemon", "join_cgroups", "serve_request"]

CGROUP_ROOT = "/sys/fs/cgroup"
LISTEN_FD = 3
CONN_FD = 4
GO_TIMEOUT = 10.0
REQUEST_TIMEOUT = 1.0
# what a fresh interpreter has after exec (start spawns with these reset/blocked)
_RESET_SIGNALS = (signal.SIGXFSZ, signal.SIGTERM, signal.SIGHUP)
STARTUP_BLOCKED = (signal.SIGTERM, signal.SIGINT)


def _cgroup_lines(pid: int | str) -> dict[str, str]:
    with open(f"/proc/{pid}/cgroup") as handle:
        pairs = (line.rstrip("\n").split(":", 2) for line in handle if line.count(":") >= 2)
        return {f"{hid}:{ctrls}": path for hid, ctrls, path in pairs}


def _procs_file(hierarchy: str, path: str) -> str | None:
    _, controllers = hierarchy.split(":", 1)
    if not controllers:  # cgroup v2
        candidates = [CGROUP_ROOT + "/unified", CGROUP_ROOT]
    else:
        names = [controllers.removeprefix("name="), *controllers.split(",")]
        candidates = [f"{CGROUP_ROOT}/{name}" for name in names]
    for mount in candidates:
        procs = f"{mount}{path}/cgroup.procs"
        if os.path.exists(procs):
            return procs
    return None


def join_cgroups(caller: int) -> list[str]:
    """Move this process into every cgroup `caller` is in and we are not; problems returned."""
    problems = []
    ours = _cgroup_lines("self")
    for hierarchy, path in _cgroup_lines(caller).items():
        if ours.get(hierarchy) == path:
            continue
        procs = _procs_file(hierarchy, path)
        if procs is None:
            problems.append(f"{hierarchy}{path}: no cgroup.procs")
            continue
        try:
            with open(procs, "w") as handle:
                handle.write("0")
        except OSError as exc:
            problems.append(f"{procs}: {exc}")
    return problems


def _set_fds(listener: int, stdio: int, conn: int) -> int:
    """stdio → 0-2, listener → 3 (as after a cold exec), the connection → 4; all else closed."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in (stdio, listener, conn)]
    for target in (0, 1, 2):
        os.dup2(high[0], target)
    os.dup2(high[1], LISTEN_FD)  # inheritable, like the fd a cold exec gets
    os.dup2(high[2], CONN_FD, inheritable=False)
    os.closerange(CONN_FD + 1, os.sysconf("SC_OPEN_MAX"))
    return CONN_FD


def _prepare(request: dict[str, Any], caller: int, fds: list[int], conn: int) -> int:
    os.setsid()
    problems = join_cgroups(caller)
    os.chdir(request["cwd"])
    forkproto.replace_environ(request["env"])
    signal.pthread_sigmask(signal.SIG_BLOCK, STARTUP_BLOCKED)
    for signum in _RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    conn = _set_fds(fds[0], fds[1], conn)
    sys.argv = list(request["argv"])
    proctitle.set_title(sys.argv)
    if problems:  # the daemon's own log is not up yet: note it in the server's
        forkproto.note(request["log"], f"daemon {os.getpid()}: cgroup: {'; '.join(problems)}")
    return conn


def _handshake(conn: int) -> bool:
    sock = socket.socket(fileno=conn)
    try:
        forkproto.send_message(sock, {"pid": os.getpid()})
        sock.settimeout(GO_TIMEOUT)
        return sock.recv(16) == forkproto.GO
    except OSError:
        return False
    finally:
        sock.close()


def _prepare_agent(request: dict[str, Any]) -> None:
    """Pre-fork the local sandbox's agent (zygote.py) while we still have no loop or thread."""
    if zygote.AGENT_MODULE not in sys.modules or not forkproto.enabled():
        return
    from kata_shim.sandbox import local
    from kata_shim.shim.flags import parse_flags

    zygote.prepare(LISTEN_FD, parse_flags(list(request["args"])).id)
    local.agent_spawner = zygote.spawn_agent


def become_daemon(request: dict[str, Any], caller: int, fds: list[int], conn: int) -> None:
    """Never returns: set up, ask `start` for the go, serve, os._exit."""
    try:
        conn = _prepare(request, caller, fds, conn)
    except BaseException as exc:  # tell `start` (it falls back), then leave
        with contextlib.suppress(BaseException):
            forkproto.send_message(socket.socket(fileno=conn), {"error": f"daemon setup: {exc!r}"})
        os._exit(1)
    status = 1
    try:
        if _handshake(conn):  # else `start` gave up on us: never serve its listener
            _prepare_agent(request)
            from kata_shim.shim.main import main

            status = main(list(request["args"]))
    finally:
        os._exit(status)


def _retire_server(context: dict[str, Any], why: str) -> None:
    """An older `start` asked (build mismatch): take the server's socket away and stop it."""
    forkproto.note(context["log"], f"fork server {context['server']} retired: {why}")
    with contextlib.suppress(OSError):
        if os.stat(context["socket"]).st_ino == context["inode"]:
            os.unlink(context["socket"])
    with contextlib.suppress(OSError):
        os.kill(context["server"], signal.SIGTERM)


def _daemon_request(
    conn: socket.socket, data: bytes, fds: list[int], context: dict[str, Any]
) -> dict[str, Any] | None:
    """The JSON request of Python `start`, or None after refusing it."""
    refusal = ""
    try:
        request = forkproto.decode(data)
    except forkproto.ForkUnavailable as exc:
        request, refusal = {}, str(exc)
    if not refusal and request.get("build") != context["build"]:
        refusal = f"server build {context['build']} != {request.get('build')} (upgraded)"
        _retire_server(context, refusal)
    if not refusal and len(fds) != 2:
        refusal = f"expected 2 fds, got {len(fds)}"
    if refusal:
        with contextlib.suppress(OSError, forkproto.ForkUnavailable):
            forkproto.send_message(conn, {"error": refusal})
        return None
    request["log"] = context["log"]
    return request


def serve_request(conn: socket.socket, caller: int, context: dict[str, Any]) -> None:
    """In the server's child: read the request on `conn` and serve it; never returns."""
    from kata_shim.shim import frontchild

    try:
        conn.settimeout(REQUEST_TIMEOUT)
        data, fds = forkproto.receive_raw(conn, max_fds=3)
    except (OSError, forkproto.ForkUnavailable) as exc:
        forkproto.note(context["log"], f"request from pid {caller} not read: {exc}")
        os._exit(1)
    if data.startswith(frontchild.MAGIC):
        frontchild.run_action(conn, data, fds, caller, context)
    request = _daemon_request(conn, data, fds, context)
    if request is None:
        os._exit(1)
    if os.fork() == 0:  # the daemon: re-parented when we exit, like a cold one after `start`
        become_daemon(request, caller, fds, conn.detach())
    os._exit(0)
