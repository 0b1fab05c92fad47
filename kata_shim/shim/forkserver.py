"""The fork server: a warm interpreter that forks one shim daemon per pod.

Started by the first `start` for a containerd (forkproto.ensure_server: we
inherit its flock on `<key>.lock` as fd 3 and hold it for life), it imports
everything a daemon runs, collects and `gc.freeze()`s (so children share those
pages instead of touching them on the first collection), and only then binds
`<key>.sock` — until then `start` falls back to a cold exec. Single thread, no
event loop, blocking sockets: nothing a child could inherit half-running.
Per connection, before reading anything: the peer must be root or our uid
(SO_PEERCRED) and in our mount namespace (/proc/<peer>/ns/mnt), the package
on disk must still be our build (forkproto.build_id, recomputed now) — a
mismatch means an upgrade: we refuse, retire (socket and lock released) and
the caller falls back and spawns a new server. Then one fork at once (the
child is reaped later, never waited for), and the child reads the request
(forkchild.serve_request): an action from the C front (frontchild.py runs
`start`/`delete` right there) or a JSON daemon request from Python `start`
(the child forks the daemon and exits, so the daemon is nobody's child of
ours). A slow or crashing client never blocks or hurts us.
We exit when containerd's socket is gone (checked every
second) or on SIGTERM.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import Any

from kata_shim.shim import forkproto

__all__ = ["main"]

LOCK_FD = 3
POLL_INTERVAL = 1.0
REQUEST_TIMEOUT = 1.0
# what a daemon imports (serve → daemon → task service, publisher, ttrpc, backends)
WARM_MODULES = (
    "uvloop",
    "kata_shim.shim.main",
    "kata_shim.shim.serve",
    "kata_shim.shim.daemon",
    "kata_shim.shim.forkchild",
    "kata_shim.shim.frontchild",  # `start`/`delete` for the C front (csrc/shimfront.c)
    "kata_shim.shim.start",
    "kata_shim.shim.delete",
    "kata_shim.guest.main",  # the local sandbox's agent (zygote.py)
    "kata_shim.sandbox.local",
    "kata_shim.sandbox.qemu",
)
_CRED = struct.Struct("3i")


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} fork-server[{os.getpid()}] {message}\n")
    sys.stderr.flush()


def warm_up() -> None:
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a backend that cannot import is imported (and fails) later
            log(f"warm-up: import {name}: {exc!r}")
    gc.collect()
    gc.freeze()


class Server:
    """The accept loop and the checks in front of each fork."""

    def __init__(self, address: str, build: str) -> None:
        self.address = address
        self.build = build
        self.paths = forkproto.server_paths(address)
        self.mntns = forkproto.mount_ns()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.inode = 0
        self.running = True

    def bind(self) -> None:
        path = self.paths["socket"]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # we hold the lock: whatever is there is a dead server's
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(128)
        self.inode = os.stat(path).st_ino

    def retire(self, why: str) -> None:
        """Stop accepting; remove our socket (if still ours) and release the lock."""
        log(f"retiring: {why}")
        self.running = False
        with contextlib.suppress(OSError):
            if os.stat(self.paths["socket"]).st_ino == self.inode:
                os.unlink(self.paths["socket"])
        self.sock.close()
        with contextlib.suppress(OSError):
            os.close(LOCK_FD)

    def containerd_gone(self) -> bool:
        return bool(self.address) and not os.path.exists(self.address)

    def serve(self) -> None:
        while self.running:
            ready, _, _ = select.select([self.sock], [], [], POLL_INTERVAL)
            self.reap()
            if self.containerd_gone():
                self.retire(f"containerd socket {self.address} is gone")
                for name in ("lock", "log"):  # no `start` can come for a dead address
                    with contextlib.suppress(OSError):
                        os.unlink(self.paths[name])
                return
            if ready:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    conn, _ = self.sock.accept()
                    with conn:
                        self.handle(conn)

    def check(self, pid: int, uid: int) -> str | None:
        """Why the caller `pid` is refused, or None; only what needs no read of the request."""
        if uid not in (0, os.geteuid()):
            return f"peer uid {uid} is neither root nor {os.geteuid()}"
        theirs = forkproto.mount_ns(str(pid))
        if theirs != self.mntns:
            return f"server in mount namespace {self.mntns}, caller in {theirs or '?'}"
        on_disk = forkproto.build_id()
        if on_disk != self.build:
            self.retire(f"package on disk is build {on_disk}, we are {self.build}")
            return f"server build {self.build} != {on_disk} (upgraded)"
        if threading.active_count() != 1:
            return "server has threads: unsafe to fork"
        return None

    def handle(self, conn: socket.socket) -> None:
        """Check the peer, then fork at once: the request is read in the child, never here."""
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            pid, uid, _ = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            refusal = self.check(pid, uid)
            if refusal is not None:
                log(f"refused pid {pid}: {refusal}")
                # drop an arrived request (its fds too): closing with it unread would reset
                # the connection, and the caller would never see why it was refused
                with contextlib.suppress(OSError):
                    conn.recv(forkproto.MAX_MESSAGE, socket.MSG_DONTWAIT)
                forkproto.send_message(conn, {"error": refusal})
                return
            self.fork(pid, conn)
        except (OSError, forkproto.ForkUnavailable) as exc:
            log(f"request failed: {exc!r}")

    def context(self) -> dict[str, Any]:
        """What a forked child needs to know about us."""
        return {
            "build": self.build,
            "address": self.address,
            "log": self.paths["log"],
            "socket": self.paths["socket"],
            "inode": self.inode,
            "server": os.getpid(),
        }

    def fork(self, caller: int, conn: socket.socket) -> None:
        """One fork; the child serves the request and is reaped later (reap), never waited for."""
        sys.stdout.flush()
        sys.stderr.flush()
        # The type attribute cache holds a reference to each name looked up last in its
        # slot: a child's own lookups would drop ours, writing (and so copying) the pages
        # of names the child never uses. Cleared, its slots hold None: ~0.3 MB less PSS
        # per daemon and per local agent (docs/performance.md).
        sys._clear_type_cache()
        if os.fork() == 0:
            try:
                from kata_shim.shim.forkchild import serve_request

                serve_request(conn, caller, self.context())
            finally:
                os._exit(1)

    @staticmethod
    def reap() -> None:
        """Collect children that are done (a front's action, a daemon's intermediate)."""
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass


def main() -> int:
    address = os.environ.pop(forkproto.ADDRESS_ENV, "")
    try:
        os.fstat(LOCK_FD)
    except OSError:
        sys.stderr.write("kata-shim fork server: run by `start` (needs its lock on fd 3)\n")
        return 2
    os.set_inheritable(LOCK_FD, False)
    build = forkproto.build_id()  # before the imports: the code we are about to load
    os.chdir("/")
    warm_up()
    server = Server(address, build)
    server.bind()
    log(f"serving {server.paths['socket']} for containerd {address or '-'} (build {build})")
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
