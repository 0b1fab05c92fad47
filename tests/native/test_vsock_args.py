"""vsock argument validation is identical in both implementations.

No AF_VSOCK socket is created here: on these machines AF_VSOCK is the host's
own link to its hypervisor. Validation happens before any syscall, so it is
tested on its own; the real native-vs-Python comparison over vsock loopback
runs inside a test guest (python -m kata_shim.native.selftest vsock).
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from kata_shim.native import selftest, vsock

BAD = [(-1, 1024), (3, -1), (2**32, 1024), (3, 2**32), ("3", 1024), (3, 1.5), (True, 1)]


@pytest.fixture(autouse=True)
def no_vsock_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to create a socket fails the test loudly (safety net)."""
    real = socket.socket

    def guarded(family=-1, *args, **kwargs):
        if family == getattr(socket, "AF_VSOCK", 40):
            raise AssertionError("test tried to create an AF_VSOCK socket")
        return real(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", guarded)


@pytest.mark.parametrize("impl", [vsock.NativeVsock, vsock.PyVsock])
@pytest.mark.parametrize(("cid", "port"), BAD)
def test_bad_addresses_rejected_before_any_syscall(impl, cid, port) -> None:
    with pytest.raises(ValueError) as connect_error:
        impl.connect(cid, port, 1.0)
    with pytest.raises(ValueError) as listen_error:
        impl.listen(cid, port)
    assert str(connect_error.value) == str(listen_error.value)


def _message(impl, cid, port) -> str:
    try:
        impl.connect(cid, port, 1.0)
    except ValueError as exc:
        return str(exc)
    raise AssertionError("accepted")


@pytest.mark.parametrize(("cid", "port"), BAD)
def test_both_implementations_word_errors_the_same(cid, port) -> None:
    assert _message(vsock.NativeVsock, cid, port) == _message(vsock.PyVsock, cid, port)


@pytest.mark.parametrize("impl", [vsock.NativeVsock, vsock.PyVsock])
def test_negative_timeout_rejected(impl) -> None:
    with pytest.raises(ValueError):
        impl.connect(3, 1024, -1.0)


def test_selftest_refuses_outside_a_test_guest() -> None:
    assert not selftest.guest_guard("console=ttyS0 quiet")
    assert selftest.guest_guard("console=ttyS0 kata_shim.selftest=1")
    result = subprocess.run(
        [sys.executable, "-m", "kata_shim.native.selftest", "vsock"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "refusing" in result.stderr


def test_selftest_epoll_mode_matches() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kata_shim.native.selftest", "epoll"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert '"match": true' in result.stdout
