"""The `start` action: find or spawn the shim daemon for a task and print its address.

Contract (shim-v2-contract.md §1.3, isulad-openeuler.md §1.4): cwd is the
bundle; the runtime options Any on stdin is saved to `options.pb`; a pod
container gets its sandbox's socket and nothing is spawned; otherwise we bind
`/run/containerd/s/<sha256>` (reusing a live one, replacing a stale one), spawn
ourselves without an action — listener on fd 3, own session, stdio on
/dev/null, cwd = bundle — and write `address` and `shim.pid` atomically.
Rules: on success the ONLY output is the address, without a newline (main
prints it); on failure a message on stderr and exit 1, never a daemon left
behind. Under containerd the daemon is forked warm: right here when this
`start` itself runs in a fork of the server (the C front's path,
frontchild.py), else by the fork server (forkproto.py) when one runs, else
exec'd cold (and a server started for the next pod). Standard library only:
this runs on every container start.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Callable

from kata_shim.shim import forkproto
from kata_shim.shim.bundle import annotations_of, read_options, sandbox_of, spec_of
from kata_shim.shim.flags import Flags
from kata_shim.shim.paths import (
    ADDRESS_FILE,
    OPTIONS_FILE,
    PID_FILE,
    SOCKET_DIR,
    atomic_write,
    socket_address,
    socket_path,
)
from kata_shim.shim.procs import probe_connect

__all__ = ["STARTUP_BLOCKED", "StartError", "daemon_argv", "self_command", "start"]

REUSE_PROBE_TIMEOUT = 2.0  # a shim that was just spawned may still be importing
# Python ignores these; an exec'd child would inherit "ignored" (SIG_IGN survives exec).
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Blocked until serve installed its handlers (then unblocked): an early SIGTERM stays pending
# instead of killing a half-started daemon that would leave its socket behind.
STARTUP_BLOCKED = (signal.SIGTERM, signal.SIGINT)


class StartError(RuntimeError):
    """`start` cannot produce an address."""


def self_command() -> list[str]:
    """How to run this program again: the console script if we are one, else `python -m`."""
    script = sys.argv[0] if sys.argv else ""
    if script and not script.endswith(".py") and os.access(script, os.X_OK):
        return [os.path.abspath(script)]
    return [sys.executable, "-m", "kata_shim.shim.main"]


def daemon_argv(flags: Flags) -> list[str]:
    """The daemon's command line: ours, without an action (= serve)."""
    argv = [*self_command(), "-namespace", flags.namespace, "-id", flags.id]
    if flags.address:
        argv += ["-address", flags.address]
    if flags.publish_binary:
        argv += ["-publish-binary", flags.publish_binary]
    if flags.debug:
        argv.append("-debug")
    return argv


def accepts_connections(path: str, timeout: float = 1.0) -> bool:
    """Does something listen on the unix socket `path`?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _make_socket_dir() -> None:
    for directory in (os.path.dirname(SOCKET_DIR), SOCKET_DIR):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o711)


def listen_or_reuse(path: str, task_id: str) -> tuple[socket.socket | None, int | None]:
    """(listener, None) after binding `path`; (None, pid or None) if a live shim serves it.

    The pid comes from asking the shim (Connect): SO_PEERCRED would name whoever
    called listen(), possibly a `start` process long gone.
    """
    _make_socket_dir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            listener.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            if accepts_connections(path):
                listener.close()
                return None, probe_connect(path, task_id, timeout=REUSE_PROBE_TIMEOUT)
            os.unlink(path)  # stale: its shim is gone
            listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(128)
    except BaseException:
        listener.close()
        raise
    return listener, None


def _close_inherited_fds(keep: int) -> None:
    """Mark every fd above 2 except `keep` close-on-exec (we may have inherited some)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            # (fails harmlessly for the directory fd listdir used, already closed)
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def spawn_daemon(argv: list[str], listener: socket.socket) -> int:
    """Start `argv` (listener as fd 3, new session, stdio /dev/null); return its pid."""
    listen_fd = listener.fileno()
    _close_inherited_fds(listen_fd)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)]
        if listen_fd == 3:
            os.set_inheritable(3, True)
        else:
            actions.append((os.POSIX_SPAWN_DUP2, listen_fd, 3))
        return os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=actions,
            setsid=True,
            setsigmask=STARTUP_BLOCKED,
            setsigdef=_RESET_SIGNALS,
        )
    finally:
        os.close(devnull)


# (argv, args, cwd, listener) → daemon pid: set by frontchild when this `start` runs in a
# warm fork of the server, which then forks the daemon itself (ForkUnavailable: it cannot)
daemon_forker: Callable[[list[str], list[str], str, socket.socket], int] | None = None


def launch_daemon(flags: Flags, argv: list[str], listener: socket.socket) -> int:
    """Fork the daemon warm (here or by the server; containerd only), else exec it cold; its pid."""
    if flags.address and forkproto.enabled():
        paths = forkproto.server_paths(flags.address)
        args = argv[len(self_command()) :]
        if daemon_forker is not None:
            try:
                return daemon_forker(argv, args, os.getcwd(), listener)
            except forkproto.ForkUnavailable as exc:
                forkproto.note(paths["log"], f"start {flags.id}: local fork failed: {exc}")
        try:
            return forkproto.request_daemon(paths["socket"], argv, args, os.getcwd(), listener)
        except forkproto.ForkUnavailable as exc:
            forkproto.note(paths["log"], f"start {flags.id}: fork server {exc}: cold exec")
        try:
            forkproto.ensure_server(flags.address, paths)
        except OSError as exc:
            forkproto.note(paths["log"], f"start {flags.id}: cannot start a fork server: {exc}")
    return spawn_daemon(argv, listener)


def _write_files(bundle: str, address: str, pid: int | None) -> None:
    atomic_write(os.path.join(bundle, ADDRESS_FILE), address.encode())
    if pid:
        atomic_write(os.path.join(bundle, PID_FILE), str(pid).encode())


def _pod_container_address(bundle: str, address: str, sandbox_id: str) -> str:
    path = socket_path(address)
    if path is None or not os.path.exists(path):
        raise StartError(f"pod sandbox {sandbox_id} has no shim listening at {address}")
    _write_files(bundle, address, None)
    return address


def _abandon(pid: int, path: str) -> None:
    """Undo a spawn whose bookkeeping failed: kill the daemon, remove its socket."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.unlink(path)


def start(flags: Flags) -> str:
    """Run the start action; return the address to print."""
    bundle = os.path.abspath(flags.bundle or os.getcwd())
    options = read_options(0)
    where = sandbox_of(flags.id, annotations_of(spec_of(bundle)))
    if options:
        atomic_write(os.path.join(bundle, OPTIONS_FILE), options, 0o600)
    address = socket_address(flags.address, flags.namespace, where.sandbox_id)
    if where.pod_container:
        return _pod_container_address(bundle, address, where.sandbox_id)
    path = socket_path(address)
    assert path is not None
    listener, running = listen_or_reuse(path, flags.id)
    if listener is None:
        _write_files(bundle, address, running)
        return address
    try:
        argv = daemon_argv(flags)  # before chdir: argv[0] may be relative
        if flags.bundle:
            os.chdir(bundle)  # the daemon's cwd is the bundle
        pid = launch_daemon(flags, argv, listener)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        listener.close()
    try:
        _write_files(bundle, address, pid)
    except BaseException:
        _abandon(pid, path)
        raise
    return address
