"""NativeEpoll (cffi) and PyEpoll (select.epoll) give the same results; so do the fd-level
native_epoll_* and py_epoll_* functions.

Every case runs on both implementations over fresh pipes/socketpairs and must produce the
same outcome (results, exception types, errnos and messages); fds are reported by role.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kata_shim.native import epoll
from kata_shim.native.epoll import NativeEpoll, PyEpoll

pytestmark = pytest.mark.timeout(60)

CLASSES = [NativeEpoll, PyEpoll]
FUNCS = {
    "native": (epoll.native_epoll_create, epoll.native_epoll_ctl, epoll.native_epoll_wait),
    "python": (epoll.py_epoll_create, epoll.py_epoll_ctl, epoll.py_epoll_wait),
}
IN, OUT, PRI, HUP = select.EPOLLIN, select.EPOLLOUT, select.EPOLLPRI, select.EPOLLHUP


class Fds:
    """A pipe and a socketpair; `named` maps fds in poll results to role names."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.a, self.b = socket.socketpair()

    def named(self, events: list[tuple[int, int]]) -> list[tuple[str, int]]:
        names = {self.r: "pipe_r", self.w: "pipe_w", self.a.fileno(): "sock_a"}
        return sorted((names.get(fd, str(fd)), ev) for fd, ev in events)

    def close(self) -> None:
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.a.close()
        self.b.close()


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except OSError as exc:
        return ("raised", type(exc).__name__, exc.errno)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def both(case: Callable[[type[NativeEpoll] | type[PyEpoll], Fds], Any]) -> Any:
    """Run case(cls, fds) for both classes on fresh fds; the outcomes must be equal."""
    results = []
    for cls in CLASSES:
        fds = Fds()
        try:
            results.append(outcome(lambda cls=cls, fds=fds: case(cls, fds)))
        finally:
            fds.close()
    assert results[0] == results[1], results
    return results[0]


def test_readiness_modify_unregister() -> None:
    def case(cls: Any, fds: Fds) -> list[Any]:
        with cls() as ep:
            ep.register(fds.r, IN)
            ep.register(fds.a, IN | OUT)  # an object with fileno()
            steps = [fds.named(ep.poll(0))]
            os.write(fds.w, b"x")
            fds.b.send(b"y")
            steps.append(fds.named(ep.poll(1.0)))
            ep.modify(fds.a, IN)
            steps.append(len(ep.poll(0, maxevents=1)))
            os.read(fds.r, 1)
            steps.append(fds.named(ep.poll(0.01)))
            ep.unregister(fds.a.fileno())
            steps.append(fds.named(ep.poll(0)))
            os.close(fds.w)
            steps.append(fds.named(ep.poll(0.5)))  # writer gone: HUP
        return [*steps, ep.closed]

    assert both(case) == (
        "ok",
        [
            [("sock_a", OUT)],
            [("pipe_r", IN), ("sock_a", IN | OUT)],
            1,
            [("sock_a", IN)],
            [],
            [("pipe_r", HUP)],
            True,
        ],
    )


def test_default_eventmask_is_selects() -> None:
    def case(cls: Any, fds: Fds) -> list[Any]:
        with cls() as ep:
            ep.register(fds.w)
            return fds.named(ep.poll(0))

    assert both(case) == ("ok", [("pipe_w", OUT)])


@pytest.mark.parametrize(
    "call",
    [
        "unregister_missing",
        "register_twice",
        "register_closed_fd",
        "modify_missing",
        "register_regular_file",
        "bad_mask",
        "negative_fd",
        "not_an_fd",
        "huge_fd",
    ],
)
def test_errors_are_the_same(call: str, tmp_path: Any) -> None:
    (tmp_path / "f").write_bytes(b"")

    def case(cls: Any, fds: Fds) -> Any:
        with cls() as ep, open(tmp_path / "f", "rb") as regular:
            ep.register(fds.r, IN)
            actions: dict[str, Callable[[], Any]] = {
                "unregister_missing": lambda: ep.unregister(fds.w),
                "register_twice": lambda: ep.register(fds.r, OUT),
                "register_closed_fd": lambda: ep.register(9999),
                "modify_missing": lambda: ep.modify(fds.w, IN),
                "register_regular_file": lambda: ep.register(regular),
                "bad_mask": lambda: ep.register(fds.w, -1),
                "negative_fd": lambda: ep.register(-3),
                "not_an_fd": lambda: ep.register("3"),
                "huge_fd": lambda: ep.unregister(2**40),
            }
            return actions[call]()

    expected = {
        "unregister_missing": ("raised", "FileNotFoundError", errno.ENOENT),
        "register_twice": ("raised", "FileExistsError", errno.EEXIST),
        "register_closed_fd": ("raised", "OSError", errno.EBADF),
        "modify_missing": ("raised", "FileNotFoundError", errno.ENOENT),
        "register_regular_file": ("raised", "PermissionError", errno.EPERM),
        "bad_mask": ("raised", "OSError", errno.EINVAL),
        "negative_fd": (
            "raised",
            "ValueError",
            "file descriptor cannot be a negative integer (-3)",
        ),
        "not_an_fd": ("raised", "TypeError", "argument must be an int, or have a fileno() method."),
        "huge_fd": ("raised", "OverflowError", "Python int too large to convert to C int"),
    }
    assert both(case) == expected[call]


@pytest.mark.parametrize(
    ("timeout", "maxevents"),
    [
        (None, -1),
        (-1, -1),
        (-0.0001, 5),
        (0, 1),
        (0.0005, 3),
        (1e10, -1),
        (float("nan"), -1),
        ("1", -1),
        (0, 0),
        (0, -2),
        (0, 2**40),
        (0, 1.5),
        (10_000_000, -1),
    ],
)
def test_poll_argument_handling_is_the_same(timeout: Any, maxevents: Any) -> None:
    def case(cls: Any, fds: Fds) -> Any:
        with cls() as ep:
            ep.register(fds.w, OUT)  # ready, so valid calls return at once
            return fds.named(ep.poll(timeout, maxevents))

    both(case)


def test_poll_waits_for_its_timeout() -> None:
    def case(cls: Any, fds: Fds) -> bool:
        with cls() as ep:
            ep.register(fds.r, IN)
            started = time.monotonic()
            assert ep.poll(0.15) == []
            return time.monotonic() - started >= 0.15

    assert both(case) == ("ok", True)


def test_closed_object_refuses_use() -> None:
    def case(cls: Any, fds: Fds) -> list[Any]:
        ep = cls()
        ep.close()
        ep.close()  # idempotent
        calls = [
            ep.fileno,
            lambda: ep.register(fds.r),
            lambda: ep.poll("x"),
            lambda: ep.unregister(-1),
        ]
        return [outcome(call) for call in calls]

    closed = ("raised", "ValueError", "I/O operation on closed epoll object")
    negative = ("raised", "ValueError", "file descriptor cannot be a negative integer (-1)")
    assert both(case) == ("ok", [closed, closed, closed, negative])


def test_epoll_fd_is_cloexec() -> None:
    def case(cls: Any, fds: Fds) -> bool:
        with cls() as ep:
            return bool(fcntl.fcntl(ep.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC)

    assert both(case) == ("ok", True)


# ---------------------------------------------------------------- fd level
def fd_level_steps(cloexec: bool, create: Any, ctl: Any, wait: Any) -> list[Any]:
    fds = Fds()
    epfd = create(cloexec)
    try:
        steps: list[Any] = [os.get_inheritable(epfd) is not cloexec]
        ctl(epfd, epoll.EPOLL_CTL_ADD, fds.r, IN)
        ctl(epfd, epoll.EPOLL_CTL_ADD, fds.w, OUT)
        steps.append(fds.named(wait(epfd, 8, 0)))
        ctl(epfd, epoll.EPOLL_CTL_MOD, fds.w, IN)
        os.write(fds.w, b"z")
        steps.append(fds.named(wait(epfd, 8, 1000)))
        ctl(epfd, epoll.EPOLL_CTL_DEL, fds.r, 0)
        steps.append(fds.named(wait(epfd, 8, 20)))
        steps += [
            outcome(lambda: ctl(epfd, epoll.EPOLL_CTL_DEL, fds.r, 0)),
            outcome(lambda: ctl(epfd, 7, fds.r, 0)),
            outcome(lambda: wait(epfd, 0, 0)),
            outcome(lambda: ctl(-1, epoll.EPOLL_CTL_ADD, fds.r, IN)),
            outcome(lambda: wait(fds.r, 1, 0)),  # not an epoll fd
        ]
        return steps
    finally:
        os.close(epfd)
        fds.close()


@pytest.mark.parametrize("cloexec", [True, False])
def test_fd_level_functions_agree(cloexec: bool) -> None:
    native = fd_level_steps(cloexec, *FUNCS["native"])
    python = fd_level_steps(cloexec, *FUNCS["python"])
    assert native == python
    assert native[:4] == [True, [("pipe_w", OUT)], [("pipe_r", IN)], []]
    assert native[4] == ("raised", "FileNotFoundError", errno.ENOENT)
    assert native[-1] == ("raised", "OSError", errno.EINVAL)


# ---------------------------------------------------------------- signals
class Interrupted(Exception):
    pass


@pytest.mark.parametrize("raises", [True, False])
def test_signal_during_poll(raises: bool) -> None:
    """A raising handler aborts poll; a quiet one lets it wait out the rest of its timeout."""
    calls: list[int] = []

    def handler(signum: int, frame: object) -> None:
        calls.append(signum)
        if raises:
            raise Interrupted

    old = signal.signal(signal.SIGUSR1, handler)

    def case(cls: Any, fds: Fds) -> Any:
        calls.clear()
        with cls() as ep:
            ep.register(fds.r, IN)
            main = threading.main_thread().ident
            timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGUSR1))
            timer.start()
            started = time.monotonic()
            try:
                result: Any = ep.poll(0.4)
            except Interrupted:
                result = "interrupted"
            finally:
                timer.cancel()
            elapsed = time.monotonic() - started
            return result, len(calls), elapsed < 0.3 if raises else elapsed >= 0.4

    try:
        assert both(case) == ("ok", ("interrupted" if raises else [], 1, True))
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_chosen_implementation_is_native() -> None:
    assert epoll.IMPLEMENTATION == "cffi"
    assert epoll.Epoll is NativeEpoll
    assert epoll.epoll_wait is epoll.native_epoll_wait
