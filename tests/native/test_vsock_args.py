"""vsock argument validation is identical in both implementations, and the guest-only
self-test refuses to run here.

SAFETY: no AF_VSOCK socket is ever created in this file. On the development machines
AF_VSOCK is the machine's own link to its hypervisor. Validation runs before any
syscall, so it is tested on its own, with every primitive of both implementations
replaced by a tripwire (and socket.socket refusing AF_VSOCK) as a safety net. The real
native-vs-Python comparison over vsock loopback (CID 1) runs inside a test guest VM:
tests/native/test_vsock_guest.py boots one and runs `kata_shim.native.selftest vsock`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kata_shim.native import selftest, vsock

IMPLS = [vsock.NATIVE, vsock.PYTHON]
U32 = 0xFFFFFFFF


class Tripwire:
    """Stands in for the primitives: any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"vsock primitive {name!r} reached: validation let a call through")


@pytest.fixture(autouse=True)
def no_vsock(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socket

    def guarded(family: int = -1, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_VSOCK:
            raise AssertionError("a test tried to create an AF_VSOCK socket")
        return real(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", guarded)
    for impl in IMPLS:
        monkeypatch.setattr(impl, "ops", Tripwire())


def outcome(fn: Any) -> tuple[str, str]:
    try:
        fn()
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)
    raise AssertionError("accepted")


def same(call: Any) -> tuple[str, str]:
    """call(impl) must be rejected the same way by both implementations."""
    native, python = (outcome(lambda impl=impl: call(impl)) for impl in IMPLS)
    assert native == python
    return native


BAD_ADDRESSES = [
    ((-1, 1024), ("ValueError", "vsock cid -1 out of range 0..4294967295")),
    ((U32 + 1, 1024), ("ValueError", "vsock cid 4294967296 out of range 0..4294967295")),
    ((3, -1), ("ValueError", "vsock port -1 out of range 0..4294967295")),
    ((3, U32 + 1), ("ValueError", "vsock port 4294967296 out of range 0..4294967295")),
    (("3", 1024), ("TypeError", "vsock cid must be an int, got str")),
    ((3, 1.5), ("TypeError", "vsock port must be an int, got float")),
    ((True, 1024), ("TypeError", "vsock cid must be an int, got bool")),
    ((3, None), ("TypeError", "vsock port must be an int, got NoneType")),
]


@pytest.mark.parametrize(("address", "expected"), BAD_ADDRESSES)
def test_bad_addresses_are_rejected_the_same_way(address: tuple[Any, Any], expected: Any) -> None:
    cid, port = address
    assert same(lambda impl: impl.vsock_connect(cid, port, 1.0)) == expected
    assert same(lambda impl: impl.connect(cid, port, 1.0)) == expected
    assert same(lambda impl: impl.vsock_listen(cid, port, 16)) == expected
    assert same(lambda impl: impl.listen(cid, port)) == expected


def test_wildcards_cannot_be_connect_targets() -> None:
    any_cid = ("ValueError", "cannot connect to VMADDR_CID_ANY")
    any_port = ("ValueError", "cannot connect to VMADDR_PORT_ANY")
    assert same(lambda impl: impl.vsock_connect(vsock.VMADDR_CID_ANY, 1024, 1.0)) == any_cid
    assert same(lambda impl: impl.vsock_connect(3, vsock.VMADDR_PORT_ANY, 1.0)) == any_port
    # ... but are fine to listen on (checked on the validation function alone)
    vsock.validate_address(vsock.VMADDR_CID_ANY, vsock.VMADDR_PORT_ANY)
    vsock.validate_address(0, 0, connect=True)
    vsock.validate_address(U32 - 1, U32 - 1, connect=True)


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (-0.5, ("ValueError", "timeout must be finite and >= 0, got -0.5")),
        (float("nan"), ("ValueError", "timeout must be finite and >= 0, got nan")),
        (float("inf"), ("ValueError", "timeout must be finite and >= 0, got inf")),
        (3e6, ("ValueError", "timeout 3000000.0 s is too large")),
        ("1", ("TypeError", "timeout must be a number of seconds, got str")),
        (True, ("TypeError", "timeout must be a number of seconds, got bool")),
        (None, ("TypeError", "timeout must be a number of seconds, got NoneType")),
    ],
)
def test_bad_connect_timeouts(timeout: Any, expected: Any) -> None:
    assert same(lambda impl: impl.vsock_connect(3, 1024, timeout)) == expected


@pytest.mark.parametrize(
    ("fd", "timeout", "expected"),
    [
        (-1, 1.0, ("ValueError", "fd -1 out of range 0..2147483647")),
        (2**31, 1.0, ("ValueError", "fd 2147483648 out of range 0..2147483647")),
        ("0", 1.0, ("TypeError", "vsock fd must be an int, got str")),
        (0, -1.0, ("ValueError", "timeout must be finite and >= 0, got -1.0")),
        (0, "x", ("TypeError", "timeout must be a number of seconds, got str")),
    ],
)
def test_bad_accept_arguments(fd: Any, timeout: Any, expected: Any) -> None:
    assert same(lambda impl: impl.vsock_accept(fd, timeout)) == expected


@pytest.mark.parametrize(
    ("backlog", "expected"),
    [
        (-1, ("ValueError", "vsock backlog -1 out of range 0..2147483647")),
        (2**31, ("ValueError", "vsock backlog 2147483648 out of range 0..2147483647")),
        (1.0, ("TypeError", "vsock backlog must be an int, got float")),
    ],
)
def test_bad_backlogs(backlog: Any, expected: Any) -> None:
    assert same(lambda impl: impl.vsock_listen(vsock.VMADDR_CID_ANY, 1024, backlog)) == expected


def test_module_level_functions_are_the_native_ones() -> None:
    assert vsock.IMPLEMENTATION == "cffi"
    assert vsock.connect == vsock.NATIVE.connect
    assert vsock.listen == vsock.NATIVE.listen
    assert vsock.accept == vsock.NATIVE.accept


# ---------------------------------------------------------------- the guest-only self-test
@pytest.mark.parametrize(
    ("cmdline", "allowed"),
    [
        ("console=ttyS0 quiet", False),
        ("console=ttyS0 kata_shim.selftest=1 quiet\n", True),
        ("kata_shim.selftest=10", False),
        ("xkata_shim.selftest=1", False),
        ("kata_shim.selftest=0", False),
        ("", False),
    ],
)
def test_guard_reads_the_exact_kernel_parameter(cmdline: str, allowed: bool) -> None:
    assert selftest.guest_guard(cmdline) is allowed


# Runs the real CLI in a child, with the same tripwires installed first: even a broken
# guard could not reach AF_VSOCK.
GUARDED_CHILD = """
import runpy, socket, sys
real = socket.socket
def guarded(family=-1, *args, **kwargs):
    if family == socket.AF_VSOCK:
        sys.exit(99)
    return real(family, *args, **kwargs)
socket.socket = guarded
from kata_shim.native import vsock
class Tripwire:
    def __getattr__(self, name):
        sys.exit(98)
vsock.NATIVE.ops = vsock.PYTHON.ops = Tripwire()
sys.argv = ["selftest", *sys.argv[1:]]
runpy.run_module("kata_shim.native.selftest", run_name="__main__")
"""


def run_selftest_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", GUARDED_CHILD, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_vsock_selftest_refuses_outside_a_test_guest() -> None:
    assert selftest.GUARD not in Path("/proc/cmdline").read_text().split(), (
        "this machine's kernel command line carries the test-guest parameter: refusing to test"
    )
    result = run_selftest_cli("vsock")
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "refusing to run the vsock self-test" in result.stderr
    assert result.stdout == ""


def test_selftest_usage() -> None:
    assert run_selftest_cli().returncode == 2
    assert run_selftest_cli("vsock", "extra").returncode == 2
    assert run_selftest_cli("epoll").returncode == 2  # gone: the event loop owns epoll
