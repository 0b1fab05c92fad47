"""libvirtd + virtlogd started by hand (no systemd) for tests and demos; never stopped under a user.

A privileged libvirtd is one per host: its QEMU driver keeps domain state (the
pid files and logs the libvirt backend reads) in /run/libvirt and
/var/log/libvirt, so test modules cannot each run a daemon of their own. They
share the host's, and each `LibvirtDaemons` holds a lease on it while in use:

* `start` (under a host-wide lock in `LEASE_DIR`) starts only the daemons
  whose socket does not answer, never a second one over a running one, and
  records each it started (pid and kernel start time) in `LEASE_DIR`; a start
  that fails stops what it started;
* `stop` drops the lease; the recorded daemons are stopped only when no other
  lease is held (a lease whose holder died does not count), by a pidfd opened
  after checking the pid's start time, so a reused PID is never signalled;
  while another module (or another engineer's session) still holds a lease,
  they keep running, and the last holder stops them;
* a daemon no `LibvirtDaemons` started (the host's own) is never stopped.

Each instance has its own work directory (`work`: pid files and daemon logs).
`LEASE_DIR` keeps only its lock file once the last user has stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["LEASE_DIR", "RUN_DIR", "LibvirtDaemons"]

#: where the daemons' sockets are (virtlogd-sock, libvirt-sock)
RUN_DIR = Path("/run/libvirt")
#: host-wide: the lock, the leases and the record of daemons a harness started
LEASE_DIR = Path("/run/kata-shim-tests/libvirtd")
DAEMONS = ("virtlogd", "libvirtd")  # in start order
SOCKETS = {"virtlogd": "virtlogd-sock", "libvirtd": "libvirt-sock"}
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Started:
    """A daemon some harness started: its pid and kernel start time (field 22 of stat)."""

    name: str
    pid: int
    start: int


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _pidfd_of(daemon: Started) -> int | None:
    """A pidfd of `daemon` if that very process still runs (not a reuse of its pid)."""
    if _start_time(daemon.pid) != daemon.start:
        return None
    try:
        pidfd = os.pidfd_open(daemon.pid)
    except ProcessLookupError:
        return None
    if _start_time(daemon.pid) != daemon.start:  # reused between the check and the open
        os.close(pidfd)
        return None
    return pidfd


def _terminate(daemon: Started, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM through a pidfd, SIGKILL when it outlives `timeout`; gone or reused: nothing."""
    pidfd = _pidfd_of(daemon)
    if pidfd is None:
        return
    try:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)
            if select.select([pidfd], [], [], wait)[0]:
                return
    finally:
        os.close(pidfd)


def _connects(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


class _Registry:
    """`LEASE_DIR`: `lock` (held for each start/stop), `lease-*` (flock-held by their users),
    `started.json` (the daemons harnesses started)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.record = root / "started.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def take_lease(self) -> tuple[int, Path]:
        """A lease held (flock) until its fd is closed, also by the holder's death."""
        path = self.root / f"lease-{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd, path

    def others_hold_leases(self) -> bool:
        """Whether a live lease is left; stale ones (holder gone) are removed."""
        live = False
        for path in self.root.glob("lease-*"):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live = True
            else:
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return live

    def started(self) -> list[Started]:
        try:
            return [Started(**entry) for entry in json.loads(self.record.read_text())]
        except FileNotFoundError:
            return []

    def save(self, daemons: list[Started]) -> None:
        if not daemons:
            self.record.unlink(missing_ok=True)
            return
        scratch = self.record.with_suffix(".tmp")
        scratch.write_text(json.dumps([asdict(daemon) for daemon in daemons]))
        scratch.replace(self.record)


class LibvirtDaemons:
    """The host's libvirtd + virtlogd for one user (a test module): `start`, then `stop`."""

    def __init__(self, run_dir: Path | None = None, lease_dir: Path | None = None) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="kslibvirt-"))
        self.run_dir = run_dir or RUN_DIR
        self.registry = _Registry(lease_dir or LEASE_DIR)
        self.started: list[int] = []  # pids of the daemons this instance started
        self._lease: tuple[int, Path] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Make sure both daemons answer, starting those that do not; hold a lease on them."""
        if self._lease is not None:
            return
        with self.registry.locked():
            self._lease = self.registry.take_lease()
            try:
                for name in DAEMONS:
                    if not self._answers(name):
                        self._launch(name)
                self._await_libvirtd(timeout)
            except BaseException:
                self._release(stop_ours=True)
                raise

    def stop(self) -> None:
        """Drop the lease; the last holder stops the daemons harnesses started (only those)."""
        if self._lease is None:
            return
        with self.registry.locked():
            self._release(stop_ours=False)

    def _release(self, *, stop_ours: bool) -> None:
        """Under the lock: drop the lease and stop what no one else needs."""
        assert self._lease is not None
        fd, path = self._lease
        path.unlink(missing_ok=True)
        os.close(fd)
        self._lease = None
        recorded = self.registry.started()
        if self.registry.others_hold_leases():
            doomed = [d for d in recorded if stop_ours and d.pid in self.started]
        else:
            doomed = recorded
        for daemon in reversed(doomed):
            _terminate(daemon)
        self.registry.save([daemon for daemon in recorded if daemon not in doomed])
        self.started.clear()

    @property
    def uri(self) -> str:
        """The URI of the daemon at `run_dir` (qemu:///system when it is the host's)."""
        return f"qemu:///system?socket={self.run_dir / SOCKETS['libvirtd']}"

    def _answers(self, name: str) -> bool:
        if not _connects(self.run_dir / SOCKETS[name]):
            return False
        if name != "libvirtd":
            return True
        result = subprocess.run(["virsh", "-c", self.uri, "uri"], capture_output=True, timeout=30)
        return result.returncode == 0

    def _launch(self, name: str) -> None:
        """Start daemon `name` (-d: it returns once running) and record it as ours."""
        pid_file = self.work / f"{name}.pid"
        env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{self.work}/{name}.log")
        with open(self.work / f"{name}.out", "wb") as out:
            done = subprocess.run(
                [name, "-d", "-p", str(pid_file)], env=env, stdout=out, stderr=out, timeout=60
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"{name} did not start (status {done.returncode}); {self._logs(name)}"
            )
        pid = _read_pid(pid_file)
        start = _start_time(pid) if pid else None
        if pid is None or start is None:
            raise RuntimeError(f"{name} did not stay up; {self._logs(name)}")
        self.registry.save([*self.registry.started(), Started(name, pid, start)])
        self.started.append(pid)

    def _await_libvirtd(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._answers("libvirtd"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not come up; {self._logs('libvirtd')}")
            time.sleep(0.1)

    def _logs(self, name: str) -> str:
        return f"see {self.work}/{name}.log and {self.work}/{name}.out"


def _read_pid(pid_file: Path, timeout: float = 10.0) -> int | None:
    """The pid a daemon wrote (it may write it just after its parent returned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(pid_file.read_text().strip())
        time.sleep(0.05)
    return None
