"""shim/procs.py: waiting for a process to be gone, with a pidfd and without."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from kata_shim.shim import procs


def _no_sleep(seconds: float) -> None:
    raise AssertionError("polled although a pidfd was available")


def test_wait_gone_is_woken_by_the_pidfd_for_a_zombie_and_times_out_for_the_living(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(procs.time, "sleep", _no_sleep)
    child = subprocess.Popen(["sleep", "0.3"])
    try:
        assert procs.wait_gone(child.pid, 10.0)  # exits: a zombie until we reap it
        assert procs.is_alive(child.pid) is False
    finally:
        child.wait()
    assert procs.wait_gone(child.pid, 1.0)  # reaped: no such process
    living = subprocess.Popen(["sleep", "30"])
    try:
        began = time.monotonic()
        assert procs.wait_gone(living.pid, 0.2) is False
        assert time.monotonic() - began >= 0.2
    finally:
        living.kill()
        living.wait()


def test_without_pidfds_it_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(pid: int) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(procs.os, "pidfd_open", refused)
    child = subprocess.Popen(["sleep", "0.2"])
    try:
        assert procs.wait_gone(child.pid, 10.0)
    finally:
        child.wait()
    living = subprocess.Popen(["sleep", "30"])
    try:
        assert procs.wait_gone(living.pid, 0.1) is False
    finally:
        living.kill()
        living.wait()
