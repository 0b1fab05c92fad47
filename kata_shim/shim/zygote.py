"""A pre-forked child of a forked daemon that becomes the local sandbox's agent.

A daemon forked from the fork server already has the agent's modules in
memory (the server imported them). Right after its handshake — before it
creates its event loop or any thread — it forks once more: that child (the
zygote) closes the shim's listener and waits, blocked in recvmsg, on a
socketpair. When the local sandbox starts its agent, `spawn_agent` sends it
the argv, environment, cwd and the agent's stdout/stderr (SCM_RIGHTS); the
zygote takes a new session, sets its command line and runs the agent's main
— in a new event loop of its own. It is the daemon's child, like a spawned
agent: pidfd, waitid and the exit status work unchanged. A daemon whose
sandbox is not local discards it (`discard`); the daemon's exit closes the
socketpair, which ends an unused zygote. Cold-exec'd daemons have none (the
local sandbox then posix_spawns the agent, as before).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from kata_shim.shim import forkproto, proctitle

__all__ = ["discard", "prepare", "spawn_agent"]

AGENT_MODULE = "kata_shim.guest.main"
ACK_TIMEOUT = 10.0


class _Zygote:
    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock


_zygote: _Zygote | None = None


def prepare(listen_fd: int, task_id: str) -> None:
    """Fork the zygote (call with no event loop and no thread running)."""
    global _zygote
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            os.close(listen_fd)  # never keep the shim's socket alive
            proctitle.set_title(["kata-agent-zygote", "-id", task_id])
            _wait_and_become_agent(theirs)
        finally:
            os._exit(1)
    theirs.close()
    _zygote = _Zygote(pid, ours)


def discard() -> None:
    """Let the zygote go (no local agent in this pod) and reap it."""
    global _zygote
    zygote, _zygote = _zygote, None
    if zygote is not None:
        zygote.sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(zygote.pid, 0)


def spawn_agent(argv: list[str], stdout: int, stderr: int) -> int | None:
    """Have the zygote become the agent `argv` (`python -m kata_shim.guest.main ...`); its pid.

    None when there is no zygote or `argv` is not the agent: the caller spawns.
    """
    global _zygote
    zygote = _zygote
    if zygote is None or AGENT_MODULE not in argv:
        return None
    _zygote = None
    request = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}
    try:
        forkproto.send_message(zygote.sock, request, [stdout, stderr])
        zygote.sock.settimeout(ACK_TIMEOUT)
        reply, _ = forkproto.receive_message(zygote.sock)
        if reply.get("pid") != zygote.pid:
            raise forkproto.ForkUnavailable(f"zygote answered {reply!r}")
    except (OSError, forkproto.ForkUnavailable):
        zygote.sock.close()
        with contextlib.suppress(OSError):
            os.kill(zygote.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(zygote.pid, 0)
        return None
    zygote.sock.close()
    return zygote.pid


def _wait_and_become_agent(sock: socket.socket) -> None:
    try:
        request, fds = forkproto.receive_message(sock, max_fds=2)
    except (OSError, forkproto.ForkUnavailable):
        os._exit(0)  # the daemon discarded us or exited
    os.setsid()
    forkproto.replace_environ(request["env"])
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((null, 0), (fds[0], 1), (fds[1], 2)):
        os.dup2(fd, target)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the daemon blocks some until it serves
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    argv = list(request["argv"])
    sys.argv = argv[argv.index(AGENT_MODULE) :]
    proctitle.set_title(argv)
    forkproto.send_message(sock, {"pid": os.getpid()})
    sock.close()
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    from kata_shim.guest.main import main

    os._exit(main(argv[argv.index(AGENT_MODULE) + 1 :]))
