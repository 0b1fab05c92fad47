"""The owner guard: a file server (QEMU's 9p, virtiofsd) may give a host file only an owner
the pod has.

The 9p export passes ownership through (`security_model=none`, and QEMU keeps
CAP_CHOWN because files the container creates must keep the container
user's owner), so guest root could otherwise give a host file any uid. The
jail's seccomp filter (qemu/jail.py) turns every chown-family call of QEMU
(`CHOWN_ARGS`) into a user notification; the jail hands the filter's
listener fd to the shim over a socketpair before it execs setpriv/QEMU
(`GUARD_FD_ENV` names the jail's end) and keeps no copy. `OwnerGuard` holds
that listener: a daemon thread receives each trapped call and answers
CONTINUE when every id it changes (uid/gid -1 = unchanged) is in the pod's
`Owners` (sandbox/owners.py, grown by `allow`), else EPERM. The decision
reads only integer arguments, so letting the kernel run the call as made
(CONTINUE) cannot be raced.
virtiofsd does not chown a file it creates: a worker thread takes the
guest caller's uid and gid as its effective ids (setresuid/setresgid) and
creates the file as that user. So the id-changing calls (`SETID_ARGS`)
are trapped and answered the same way: a server thread may become only an
owner the pod has (root, the server's own id, is always one).
Fail closed: if the shim (the listener's only holder) dies, the kernel fails
every later chown of QEMU with ENOSYS.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
import threading
from pathlib import Path

from kata_shim.errors import FailedPrecondition, Unavailable
from kata_shim.sandbox.owners import Owners
from kata_shim.sandbox.qemu.confine import jailed
from kata_shim.sandbox.qemu.notify import Call, Listener, libseccomp, native_arch
from kata_shim.sandbox.rootsock import listen_private, peer_uid

__all__ = [
    "ATTACH_TIMEOUT",
    "CHOWN_ARGS",
    "GUARD_FD_ENV",
    "GUARD_SOCKET_OPTION",
    "SETID_ARGS",
    "TRAPPED_ARGS",
    "OwnerGuard",
    "OwnerPolicy",
    "spawn_guarded",
]

log = logging.getLogger(__name__)

#: the environment variable naming the jail's end of the guard socketpair
GUARD_FD_ENV = "KATA_SHIM_OWNER_GUARD_FD"
#: how long the jail may take to hand over its seccomp listener (its exit ends it early)
ATTACH_TIMEOUT = 60.0
#: the jail option naming a guard socket to connect to (when the jail is not the shim's child)
GUARD_SOCKET_OPTION = "--guard-socket"
#: a trapped syscall → (indexes of its uid arguments, indexes of its gid arguments)
IdArgs = tuple[tuple[int, ...], tuple[int, ...]]
#: chown-family syscalls (the *32 ones exist on i386)
CHOWN_ARGS: dict[str, IdArgs] = {
    "chown": ((1,), (2,)),
    "fchown": ((1,), (2,)),
    "lchown": ((1,), (2,)),
    "fchownat": ((2,), (3,)),
    "chown32": ((1,), (2,)),
    "fchown32": ((1,), (2,)),
    "lchown32": ((1,), (2,)),
}
#: identity changes (virtiofsd creates files as the guest caller's uid/gid)
SETID_ARGS: dict[str, IdArgs] = {
    "setuid": ((0,), ()),
    "setgid": ((), (0,)),
    "setreuid": ((0, 1), ()),
    "setregid": ((), (0, 1)),
    "setresuid": ((0, 1, 2), ()),
    "setresgid": ((), (0, 1, 2)),
    "setfsuid": ((0,), ()),
    "setfsgid": ((), (0,)),
    "setuid32": ((0,), ()),
    "setgid32": ((), (0,)),
    "setreuid32": ((0, 1), ()),
    "setregid32": ((), (0, 1)),
    "setresuid32": ((0, 1, 2), ()),
    "setresgid32": ((), (0, 1, 2)),
    "setfsuid32": ((0,), ()),
    "setfsgid32": ((), (0,)),
}
#: everything the jail's filter may turn into a notification for the guard (setid: with
#: its --trap-setid, as virtiofsd is started)
TRAPPED_ARGS: dict[str, IdArgs] = CHOWN_ARGS | SETID_ARGS
UNCHANGED = 0xFFFFFFFF  # (uid_t)-1
_ID_MASK = 0xFFFFFFFF  # the kernel reads uid_t/gid_t: the low 32 bits of the register
#: how many refusals are logged at warning level per sandbox (a guest can make many)
LOGGED_REFUSALS = 20
LISTENER_LINK = "anon_inode:seccomp notify"
#: consecutive failed reads of a readable listener after which it is given up (closed)
MAX_FAILURES = 100


def syscall_numbers() -> dict[int, IdArgs]:
    """`TRAPPED_ARGS` by this architecture's syscall numbers."""
    lib = libseccomp()
    found = {}
    for name, indexes in TRAPPED_ARGS.items():
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:
            found[number] = indexes
    return found


class OwnerPolicy:
    """Decides one trapped call from its integer arguments alone."""

    def __init__(self) -> None:
        self.owners = Owners()
        self._arch = native_arch()
        self._args = syscall_numbers()

    def refusal(self, call: Call) -> int | None:
        """None to run `call` as made, else the errno to fail it with."""
        indexes = self._args.get(call.nr)
        if indexes is None or call.arch != self._arch:
            return errno.EPERM  # not a call this filter traps: never let it through
        owners = self.owners  # one snapshot (`allow` replaces it from another thread)
        uid_indexes, gid_indexes = indexes
        uids = {call.args[index] & _ID_MASK for index in uid_indexes} - {UNCHANGED}
        gids = {call.args[index] & _ID_MASK for index in gid_indexes} - {UNCHANGED}
        if not uids <= owners.uids or not gids <= owners.gids:
            return errno.EPERM
        return None


class OwnerGuard:
    """One sandbox's guard: the socketpair to the jail, then the listener and its thread."""

    def __init__(self, name: str, socket_path: Path | None = None) -> None:
        """`socket_path`: listen there instead of a socketpair, for a jail that is not our
        child (libvirt starts QEMU): the jail connects to it (`jail_options`)."""
        self.name = name
        self.socket_path = socket_path
        try:
            self.policy = OwnerPolicy()
        except OSError as exc:
            raise FailedPrecondition(
                f"QEMU's owner guard needs libseccomp ({exc}); install libseccomp2 (>= 2.5)"
            ) from exc
        self.refused = 0
        if socket_path is None:
            self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self._ours, self._theirs = listen_private(socket_path), socket.socket(socket.AF_UNIX)
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)

    def jail_fd(self) -> int:
        """The fd to pass to the jail (pass_fds), named by `jail_env()`."""
        return self._theirs.fileno()

    def jail_env(self) -> dict[str, str]:
        return {GUARD_FD_ENV: str(self.jail_fd())}

    def jail_options(self) -> tuple[str, ...]:
        """The jail's options (before its `--`) that make it connect to `socket_path`."""
        assert self.socket_path is not None
        return (GUARD_SOCKET_OPTION, str(self.socket_path))

    def allow(self, owners: Owners) -> None:
        """Add `owners` to the ids QEMU may give a host file."""
        current = self.policy.owners
        if not owners <= current:
            self.policy.owners = current | owners
            log.info(
                "sandbox %s: host files may be owned by uids %s, gids %s",
                self.name,
                _shown(self.policy.owners.uids),
                _shown(self.policy.owners.gids),
            )

    async def attach(self, timeout: float) -> None:
        """After the jail was spawned: receive its listener and start answering.

        Raises Unavailable when the jail exits or sends no listener in `timeout`.
        """
        self._theirs.close()  # the jail holds it now: its exit means EOF here
        if self.socket_path is not None:
            self._ours = await _accept_root(self._ours, timeout)
        fd = await _receive_fd(self._ours, timeout)
        self._ours.close()
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != LISTENER_LINK:
                raise Unavailable("the QEMU jail sent an fd that is not a seccomp listener")
            self._listener = Listener(fd)
        except BaseException:
            os.close(fd)
            raise
        thread = threading.Thread(target=self._serve, name=f"owner-guard-{self.name}", daemon=True)
        thread.start()
        self._thread = thread

    def _serve(self) -> None:
        listener = self._listener
        assert listener is not None
        poller = select.poll()
        poller.register(listener.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        failures = 0
        while failures < MAX_FAILURES:
            events = dict(poller.poll())
            if self._stop_r in events:
                return
            flags = events.get(listener.fd, 0)
            if flags & select.POLLIN:
                failures = 0 if self._answer_one(listener) else failures + 1
            elif flags & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return  # QEMU is gone: nothing can be trapped any more
        log.error(
            "sandbox %s: owner guard: the seccomp listener keeps failing; closing it, "
            "so QEMU's chowns now fail (ENOSYS)",
            self.name,
        )
        self._listener = None
        listener.close()

    def _answer_one(self, listener: Listener) -> bool:
        """Answer one queued call; False when it could not be read."""
        try:
            call = listener.receive()
        except OSError as exc:  # the caller died (or was interrupted) before we read it
            log.debug("sandbox %s: owner guard: %s", self.name, exc)
            return False
        refusal = self.policy.refusal(call)
        if refusal is not None:
            self._note_refusal(call)
        try:
            listener.respond(call.id, refusal)
        except OSError as exc:  # the caller died or was interrupted meanwhile
            log.debug("sandbox %s: owner guard: %s", self.name, exc)
            if refusal is None:  # or a kernel without CONTINUE (< 5.5): never leave it hanging
                with contextlib.suppress(OSError):
                    listener.respond(call.id, errno.EPERM)
        return True

    def _note_refusal(self, call: Call) -> None:
        self.refused += 1
        level = logging.WARNING if self.refused <= LOGGED_REFUSALS else logging.DEBUG
        log.log(
            level,
            "sandbox %s: refused QEMU (pid %d) syscall %d args %s: an owner the pod does not "
            "have (%d refused so far)",
            self.name,
            call.pid,
            call.nr,
            [hex(arg) for arg in call.args[:4]],
            self.refused,
        )

    def close(self) -> None:
        """Stop answering and close everything (idempotent). QEMU's later chowns fail."""
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._ours.close()
        self._theirs.close()
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1


async def _accept_root(server: socket.socket, timeout: float) -> socket.socket:
    """The jail's connection (a root peer, SO_PEERCRED); the listening socket is closed."""
    await _readable(server, timeout)
    conn, _ = server.accept()
    server.close()
    uid = peer_uid(conn)
    if uid != 0:
        conn.close()
        raise Unavailable(f"the owner guard socket was reached by uid {uid}, not QEMU's jail")
    return conn


async def _readable(sock: socket.socket, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()
    sock.setblocking(False)

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await asyncio.wait_for(readable, timeout)
    except TimeoutError:
        raise Unavailable(f"the QEMU jail sent no seccomp listener in {timeout:g}s") from None
    finally:
        loop.remove_reader(sock.fileno())


async def _receive_fd(sock: socket.socket, timeout: float) -> int:
    await _readable(sock, timeout)
    _, fds, msg_flags, _ = socket.recv_fds(sock, 64, 1, socket.MSG_CMSG_CLOEXEC)
    if msg_flags & socket.MSG_CTRUNC or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise Unavailable("the QEMU jail exited before handing over its seccomp listener")
    return fds[0]


def _shown(ids: frozenset[int]) -> str:
    shown = sorted(ids)
    text = ",".join(str(value) for value in shown[:16])
    return text + (f",... ({len(shown)} ids)" if len(shown) > 16 else "")


async def spawn_guarded(
    name: str, argv: list[str], fds: tuple[int, ...], owners: Owners, log_path: Path
) -> tuple[asyncio.subprocess.Process, OwnerGuard | None]:
    """Start a file server (QEMU, virtiofsd) in its own session with `fds`, stdin/stdout on
    /dev/null and stderr appended to `log_path`. Under the jail (`jailed(argv)`) it gets an
    owner guard allowing `owners`, whose socket the jail receives; the caller attaches it."""
    guard = OwnerGuard(name) if jailed(argv) else None
    env = None
    try:
        if guard is not None:
            guard.allow(owners)
            fds, env = (*fds, guard.jail_fd()), os.environ | guard.jail_env()
        with open(log_path, "ab") as server_log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=server_log,
                start_new_session=True,
                pass_fds=fds,
                env=env,
            )
    except BaseException:
        if guard is not None:
            guard.close()
        raise
    return proc, guard
