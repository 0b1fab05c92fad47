"""kata_shim/devenv/libvirtd.py with fake daemons: it stops only what it started, and never
under another user (test module or session) of the same daemons.

The fakes (tests/fakes/libvirt_daemons.py) live in this test's own run and lease
directories; no real libvirtd or virtlogd is involved or touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kata_shim.devenv import libvirtd
from kata_shim.devenv.libvirtd import LibvirtDaemons
from tests.fakes import libvirt_daemons

pytestmark = pytest.mark.timeout(60)

SOCKETS = {"virtlogd": "virtlogd-sock", "libvirtd": "libvirt-sock"}


@dataclass
class Host:
    run: Path
    leases: Path
    made: list[LibvirtDaemons]
    by_hand: list[int]

    def daemons(self) -> LibvirtDaemons:
        made = LibvirtDaemons()
        self.made.append(made)
        return made

    def answers(self, name: str) -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(self.run / SOCKETS[name]))
            except OSError:
                return False
        return True

    def start_by_hand(self, name: str) -> int:
        """A daemon no harness started (the host's own)."""
        pid_file = self.run / f"{name}-by-hand.pid"
        subprocess.run([name, "-d", "-p", str(pid_file)], check=True)
        pid = int(pid_file.read_text())
        self.by_hand.append(pid)
        return pid


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    """Fake daemons on PATH, socket and lease directories of this test's own."""
    run = tmp_path / "run"
    run.mkdir()
    libvirt_daemons.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LIBVIRT_RUN", str(run))
    monkeypatch.setattr(libvirtd, "RUN_DIR", run, raising=False)
    monkeypatch.setattr(libvirtd, "LEASE_DIR", tmp_path / "leases", raising=False)
    monkeypatch.setattr(libvirtd, "SOCKET", run / "libvirt-sock", raising=False)
    state = Host(run, tmp_path / "leases", [], [])
    yield state
    for made in state.made:
        pids = [*made.started]
        made.stop()
        for pid in pids:  # whatever a failing test left running
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(made.work, ignore_errors=True)
    for pid in state.by_hand:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def test_it_starts_both_and_stops_what_it_started_by_pid(host: Host) -> None:
    daemons = host.daemons()
    daemons.start()
    assert host.answers("virtlogd") and host.answers("libvirtd")
    pids = list(daemons.started)
    assert len(pids) == 2 and all(running(pid) for pid in pids)
    daemons.stop()
    assert not any(running(pid) for pid in pids)
    assert not host.answers("libvirtd")
    assert sorted(path.name for path in host.leases.iterdir()) == ["lock"]


def test_a_second_module_keeps_the_daemons_when_the_first_stops(host: Host) -> None:
    first, second = host.daemons(), host.daemons()
    first.start()
    pids = list(first.started)
    second.start()  # another module (or engineer) on the same host
    first.stop()
    assert all(running(pid) for pid in pids) and host.answers("libvirtd")
    second.stop()  # the last user stops them
    assert not any(running(pid) for pid in pids)


def test_daemons_it_did_not_start_are_never_stopped(host: Host) -> None:
    logd, libvirt = host.start_by_hand("virtlogd"), host.start_by_hand("libvirtd")
    daemons = host.daemons()
    daemons.start()
    daemons.stop()
    assert running(logd) and running(libvirt) and host.answers("libvirtd")


def test_a_running_virtlogd_is_used_not_doubled(host: Host) -> None:
    logd = host.start_by_hand("virtlogd")
    daemons = host.daemons()
    daemons.start()  # libvirtd only
    assert len(daemons.started) == 1 and daemons.started[0] != logd
    libvirt = daemons.started[0]
    daemons.stop()
    assert running(logd) and not running(libvirt)


def test_a_failed_start_stops_what_it_started(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_LIBVIRTD_FAIL", "1")
    daemons = host.daemons()
    with pytest.raises((RuntimeError, subprocess.CalledProcessError)):
        daemons.start()
    assert not host.answers("virtlogd")  # the virtlogd it had started is gone
    assert daemons.work.is_dir()


def test_a_dead_users_lease_does_not_keep_the_daemons(host: Host) -> None:
    daemons = host.daemons()
    daemons.start()
    pids = list(daemons.started)
    (host.leases / "lease-999999999-dead").write_text("")  # its holder died: no flock
    daemons.stop()
    assert not any(running(pid) for pid in pids)
    assert not list(host.leases.glob("lease-*"))


def test_a_reused_pid_is_never_signalled(host: Host) -> None:
    daemons = host.daemons()
    daemons.start()
    logd = daemons.started[0]  # virtlogd starts first
    assert Path(f"/proc/{logd}/comm").read_text() == "virtlogd\n"
    record = host.leases / "started.json"
    text = record.read_text()
    start = libvirtd._start_time(logd)
    record.write_text(text.replace(f'"start": {start}', f'"start": {start + 1}'))  # another process
    daemons.stop()
    assert running(logd)
    os.kill(logd, signal.SIGTERM)
