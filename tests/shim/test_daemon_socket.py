"""The daemon removes its socket at exit only while it is still the file it was started on.

iSulad removes a pod sandbox's bundle (the daemon's cwd, with `address`) while
the pod's containers still use the sandbox's shim, so the bundle cannot be the
proof of ownership; the socket file's identity (st_dev, st_ino) is.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.shim.daemon import Daemon, _file_id
from kata_shim.shim.flags import parse_flags


@pytest.fixture
def sock_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="kst-", dir="/tmp")
    path = os.path.join(directory, "s")
    try:
        yield path
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(directory)


def bound(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    return sock


def started_on(path: str, bundle: Path) -> Daemon:
    daemon = Daemon(parse_flags(["-namespace", "isula", "-id", "t1"]), str(bundle))
    daemon.listen_path = path
    daemon._socket_file = _file_id(path)
    return daemon


def test_socket_is_removed_although_the_bundle_is_gone(sock_path: str, tmp_path: Path) -> None:
    listener = bound(sock_path)
    daemon = started_on(sock_path, tmp_path / "removed-by-isula-rm")
    daemon._remove_socket()
    listener.close()
    assert not os.path.exists(sock_path)


def test_a_socket_another_shim_bound_since_is_left_alone(sock_path: str, tmp_path: Path) -> None:
    old = bound(sock_path)
    daemon = started_on(sock_path, tmp_path)
    os.unlink(sock_path)  # what `start` does to a dead shim's socket before binding anew
    new = bound(sock_path)
    try:
        daemon._remove_socket()
        assert os.path.exists(sock_path)
    finally:
        old.close()
        new.close()
