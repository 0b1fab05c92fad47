"""The shared vsock policy (deadlines, EINTR, cleanup) over fake primitives, and the
primitives that are not vsock-specific (poll, SO_ERROR, accept's errors) on pipes and
AF_UNIX sockets, native against Python.

SAFETY: no AF_VSOCK socket is created here (see test_vsock_args.py); `FakeOps` hands
out pipe or AF_UNIX fds, and socket.socket refuses AF_VSOCK for the whole module.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Any

import pytest

from kata_shim.native import vsock


class Boom(Exception):
    """What a raising signal handler would throw into a wait."""


@pytest.fixture(autouse=True)
def no_vsock(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socket

    def guarded(family: int = -1, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_VSOCK:
            raise AssertionError("a test tried to create an AF_VSOCK socket")
        return real(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", guarded)


class FakeOps:
    """Scripted primitives: `polls` are poll results (bool, an exception, or a delay)."""

    def __init__(
        self,
        polls: list[Any],
        accepts: list[Any] | None = None,
        finish_error: OSError | None = None,
    ) -> None:
        self.polls, self.accepts, self.finish_error = polls, accepts or [], finish_error
        self.timeouts: list[int] = []
        self.opened: list[int] = []
        self.peers: list[socket.socket] = []

    def connect_start(self, cid: int, port: int) -> int:
        ours, theirs = socket.socketpair()
        self.peers.append(theirs)
        self.opened.append(ours.fileno())
        return ours.detach()

    def poll_one(self, fd: int, events: int, timeout_ms: int) -> bool:
        self.timeouts.append(timeout_ms)
        step = self.polls.pop(0)
        if isinstance(step, float):
            time.sleep(step)
            step = self.polls.pop(0)
        if isinstance(step, BaseException):
            raise step
        return bool(step)

    def connect_finish(self, fd: int) -> None:
        if self.finish_error is not None:
            raise self.finish_error

    def listen(self, cid: int, port: int, backlog: int) -> int:
        raise AssertionError("not used")

    def accept(self, fd: int) -> tuple[int, int, int]:
        step = self.accepts.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture
def fake() -> Any:
    ops: list[FakeOps] = []

    def make(*args: Any, **kwargs: Any) -> tuple[vsock.Vsock, FakeOps]:
        ops.append(FakeOps(*args, **kwargs))
        return vsock.Vsock(ops[-1], "fake"), ops[-1]

    yield make
    for op in ops:
        op.close()


def test_connect_returns_the_fd_and_rounds_the_timeout_up(fake: Any) -> None:
    impl, ops = fake([True])
    fd = impl.vsock_connect(3, 1024, 0.0001)
    assert fd == ops.opened[0] and is_open(fd)
    assert ops.timeouts == [1]
    os.close(fd)


@pytest.mark.parametrize(
    ("polls", "finish_error", "raised", "code"),
    [
        ([False], None, TimeoutError, errno.ETIMEDOUT),
        ([True], OSError(errno.ECONNREFUSED, "refused"), OSError, errno.ECONNREFUSED),
        ([Boom()], None, Boom, None),
    ],
)
def test_failed_connect_closes_its_fd(
    fake: Any, polls: Any, finish_error: Any, raised: Any, code: Any
) -> None:
    impl, ops = fake(polls, finish_error=finish_error)
    with pytest.raises(raised) as info:
        impl.vsock_connect(3, 1024, 0.5)
    assert getattr(info.value, "errno", None) == code
    assert not is_open(ops.opened[0])


def test_eintr_resumes_with_the_time_left(fake: Any) -> None:
    impl, ops = fake([0.15, InterruptedError(errno.EINTR, "EINTR"), False])
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        impl.vsock_connect(3, 1024, 0.4)
    assert ops.timeouts[0] == 400
    assert 200 <= ops.timeouts[1] <= 260  # about 0.25 s were left
    assert time.monotonic() - started < 0.35  # the fake does not sleep the rest


def test_deadline_passed_polls_with_zero(fake: Any) -> None:
    impl, ops = fake([0.05, InterruptedError(errno.EINTR, "EINTR"), False])
    with pytest.raises(TimeoutError):
        impl.vsock_connect(3, 1024, 0.01)
    first, then = ops.timeouts  # the first poll gets what is left of 10 ms (less on a busy host)
    assert 0 <= first <= 10 and then == 0


def test_accept_retries_lost_races_and_waits_forever_on_none(fake: Any) -> None:
    blocked = BlockingIOError(errno.EAGAIN, "EAGAIN")
    impl, ops = fake([True, True], accepts=[blocked, (7, 3, 5000)])
    assert impl.vsock_accept(0, None) == (7, 3, 5000)
    assert ops.timeouts == [-1, -1]


def test_accept_times_out(fake: Any) -> None:
    impl, ops = fake([False])
    with pytest.raises(TimeoutError) as info:
        impl.vsock_accept(0, 0.25)
    assert info.value.errno == errno.ETIMEDOUT
    assert ops.timeouts == [250]


def test_socket_level_wraps_blocking_sockets(fake: Any) -> None:
    impl, ops = fake([True])
    with impl.connect(3, 1024, 1.0) as sock:
        assert sock.fileno() == ops.opened[0]
        assert sock.family == socket.AF_UNIX  # the fake's socketpair
        assert sock.gettimeout() is None


# ---------------------------------------------------------------- real primitives, no vsock
OPS = {"native": vsock.NATIVE.ops, "python": vsock.PYTHON.ops}


def outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except OSError as exc:
        return ("raised", type(exc).__name__, exc.errno)


def test_poll_one_agrees_on_pipes() -> None:
    r, w = os.pipe()
    try:
        results = {}
        for name, ops in OPS.items():
            results[name] = [
                ops.poll_one(w, select.POLLOUT, 0),
                ops.poll_one(r, select.POLLIN, 30),  # nothing to read: timeout
            ]
        assert results["native"] == results["python"] == [True, False]
    finally:
        os.close(r)
        os.close(w)


def test_connect_finish_and_accept_agree_off_vsock() -> None:
    """SO_ERROR on an AF_UNIX socket; accept and SO_ERROR on a pipe (ENOTSOCK, fd kept)."""
    r, w = os.pipe()
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        results = {}
        for name, ops in OPS.items():
            finish = outcome(lambda ops=ops: ops.connect_finish(a.fileno()))
            results[name] = [
                finish,
                os.get_blocking(a.fileno()),
                outcome(lambda ops=ops: ops.accept(r)),
                outcome(lambda ops=ops: ops.connect_finish(r)),
                is_open(r),
            ]
            a.setblocking(False)
        assert results["native"] == results["python"]
        assert results["native"] == [
            ("ok", None),
            True,
            ("raised", "OSError", errno.ENOTSOCK),
            ("raised", "OSError", errno.ENOTSOCK),
            True,
        ]
    finally:
        os.close(r)
        os.close(w)
        a.close()
        b.close()
