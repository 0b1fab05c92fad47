"""The fork server's wire protocol and its client side (what `start` runs).

One server per containerd (keyed by sha256 of containerd's `-address`) lives
at `/run/kata-shim-fork/<key>.sock` (dir 0700, socket 0600, SOCK_SEQPACKET);
`<key>.lock` is flock'ed by the live server for its whole life, `<key>.log`
is its log (and where `start` notes why it fell back to a cold exec).
Exchange on one connection, one JSON message each way per step:
  1. client → {build, mntns, argv, args, cwd, env} + fds [listener, /dev/null]
  2. server → {"error": why} (then the client falls back), or the forked
     daemon itself → {"pid": N} once it is set up (session, cgroup, cwd, title)
  3. client → "go"; only then does the daemon serve. A client that gave up
     closes the connection instead and the daemon exits without serving, so
     exactly one process ever serves a listener.
Standard library only: this runs inside every `start`.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ENABLE_ENV",
    "FORK_DIR",
    "ForkUnavailable",
    "build_id",
    "enabled",
    "ensure_server",
    "note",
    "request_daemon",
    "server_paths",
]

# not under the sandbox state root /run/kata-shim: "fork" is a valid sandbox id
FORK_DIR = "/run/kata-shim-fork"
ENABLE_ENV = "KATA_SHIM_FORK_SERVER"  # "0"/"off" disables, "1"/"on" enables
ADDRESS_ENV = "KATA_SHIM_FORK_ADDRESS"  # tells a spawned server which containerd it serves
DEFAULT_ENABLED = True
MAX_MESSAGE = 256 * 1024
CONNECT_TIMEOUT = 1.0
REPLY_TIMEOUT = 5.0  # fork + child setup; generous for a loaded 2-CPU host
GO = b"go"


class ForkUnavailable(Exception):
    """The fork server cannot give us a daemon; the message says why (start cold-execs)."""


def enabled(environ: dict[str, str] | None = None) -> bool:
    value = (environ if environ is not None else os.environ).get(ENABLE_ENV, "").strip().lower()
    if value in ("0", "off", "no", "false"):
        return False
    if value in ("1", "on", "yes", "true"):
        return True
    return DEFAULT_ENABLED


def replace_environ(env: Mapping[str, str]) -> None:
    """Make the environment (os.environ and the C one) exactly `env`, touching only what
    differs. A forked child mostly has its caller's environment already (both come from
    containerd); clear() + update() rewrote every variable, ~0.7 ms after a fork."""
    current = dict(os.environ)
    for key in current.keys() - env.keys():
        del os.environ[key]
    for key, value in env.items():
        if current.get(key) != value:
            os.environ[key] = value


def server_paths(address: str) -> dict[str, str]:
    """socket / lock / log paths of the server for containerd at `address`."""
    key = hashlib.sha256(address.encode()).hexdigest()[:32]
    base = os.path.join(FORK_DIR, key)
    return {"key": key, "socket": base + ".sock", "lock": base + ".lock", "log": base + ".log"}


def build_id() -> str:
    """Package version + interpreter + mtimes of the package dirs (an upgrade changes them)."""
    import kata_shim

    root = os.path.dirname(os.path.abspath(kata_shim.__file__))
    python = os.path.realpath(sys.executable)
    digest = hashlib.sha256(f"{kata_shim.__version__}\0{python}\0{sys.version}".encode())
    stack = [root]
    while stack:
        directory = stack.pop()
        with contextlib.suppress(OSError):
            digest.update(f"{directory}\0{os.stat(directory).st_mtime_ns}\0".encode())
            for entry in os.scandir(directory):
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(("_", ".")):
                    stack.append(entry.path)
    return f"{kata_shim.__version__}+{digest.hexdigest()[:16]}"


def mount_ns(pid: str = "self") -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""


def note(log_path: str, message: str) -> None:
    """Append one line to the server log (never stdout/stderr: containerd parses them)."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} kata-shim[{os.getpid()}] {message}\n"
    with contextlib.suppress(OSError):
        make_fork_dir()
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode(errors="replace"))
        finally:
            os.close(fd)


def make_fork_dir() -> None:
    for directory in (os.path.dirname(FORK_DIR), FORK_DIR):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)


def send_message(sock: socket.socket, payload: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(payload).encode()
    if len(data) > MAX_MESSAGE:
        raise ForkUnavailable(f"request of {len(data)} bytes exceeds {MAX_MESSAGE}")
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def receive_raw(sock: socket.socket, max_fds: int = 0) -> tuple[bytes, list[int]]:
    """One message's bytes (+ fds); EOF or truncation raises ForkUnavailable (fds closed)."""
    space = socket.CMSG_SPACE(max_fds * 4) if max_fds else 0
    data, ancillary, flags, _ = sock.recvmsg(MAX_MESSAGE, space)
    fds: list[int] = []
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(raw) - len(raw) % 4
            fds.extend(array.array("i", raw[:usable]))
    problem = "" if data else "connection closed"
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        problem = "message truncated"
    if problem:
        for fd in fds:
            os.close(fd)
        raise ForkUnavailable(problem)
    return data, fds


def decode(data: bytes) -> dict[str, Any]:
    """A JSON message (object) or ForkUnavailable."""
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ForkUnavailable(str(exc)) from None
    if not isinstance(message, dict):
        raise ForkUnavailable("message is not an object")
    return message


def receive_message(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
    """One JSON message (+ fds); EOF or garbage raises ForkUnavailable (fds are closed then)."""
    data, fds = receive_raw(sock, max_fds)
    try:
        return decode(data), fds
    except ForkUnavailable:
        for fd in fds:
            os.close(fd)
        raise


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise ForkUnavailable("not running (no socket)") from None
    except ConnectionRefusedError:
        sock.close()
        raise ForkUnavailable("not running (socket refused)") from None
    except OSError as exc:
        sock.close()
        raise ForkUnavailable(f"cannot connect: {exc}") from None
    return sock


def request_daemon(
    path: str, argv: list[str], args: list[str], cwd: str, listener: socket.socket
) -> int:
    """Have the server at `path` fork a daemon serving `listener`; return its pid."""
    sock = _connect(path)
    try:
        request = {
            "build": build_id(),
            "mntns": mount_ns(),
            "argv": argv,
            "args": args,
            "cwd": cwd,
            "env": dict(os.environ),
        }
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            send_message(sock, request, [listener.fileno(), devnull])
        finally:
            os.close(devnull)
        sock.settimeout(REPLY_TIMEOUT)
        reply, _ = receive_message(sock)
        if "error" in reply:
            raise ForkUnavailable(f"refused: {reply['error']}")
        pid = reply.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            raise ForkUnavailable(f"bad reply {reply!r}")
        sock.sendall(GO)
        return pid
    except OSError as exc:
        raise ForkUnavailable(f"exchange failed: {exc}") from None
    finally:
        sock.close()


def ensure_server(address: str, paths: dict[str, str]) -> bool:
    """Spawn a server for `address` unless one holds the lock; True if we spawned one."""
    make_fork_dir()
    lock = os.open(paths["lock"], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a server is running or starting
        _spawn_server(address, paths, lock)
        return True
    finally:
        os.close(lock)  # the server keeps its own copy of the locked description


def _spawn_server(address: str, paths: dict[str, str], lock: int) -> None:
    log = os.open(paths["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    env = dict(os.environ)
    env[ADDRESS_ENV] = address
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, log, 2),
            (os.POSIX_SPAWN_DUP2, lock, 3),
        ]
        argv = [sys.executable, "-m", "kata_shim.shim.forkserver"]
        os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
    finally:
        os.close(log)
        os.close(devnull)
