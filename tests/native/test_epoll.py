"""NativeEpoll (cffi) and PyEpoll (select.epoll) give the same results."""

from __future__ import annotations

import os
import select
import socket

import pytest

from kata_shim.native.epoll import NativeEpoll, PyEpoll


def scenario(cls) -> list:
    """Readiness, modify, unregister, timeouts and errors on pipes and a socketpair."""
    r, w = os.pipe()
    a, b = socket.socketpair()
    out: list = []
    try:
        with cls() as ep:
            ep.register(r, select.EPOLLIN)
            ep.register(a.fileno(), select.EPOLLIN | select.EPOLLOUT)
            out.append(sorted((fd == r, ev) for fd, ev in ep.poll(0)))
            os.write(w, b"x")
            b.send(b"y")
            out.append(sorted((fd == r, ev) for fd, ev in ep.poll(1.0)))
            ep.modify(a.fileno(), select.EPOLLOUT)
            out.append(sorted((fd == r, ev) for fd, ev in ep.poll(0, maxevents=1)))
            ep.unregister(r)
            out.append([(fd == r, ev) for fd, ev in ep.poll(0.01)])
            for bad in (
                lambda: ep.unregister(r),
                lambda: ep.register(a.fileno()),
                lambda: ep.register(9999),
                lambda: ep.modify(r, select.EPOLLIN),
            ):
                try:
                    bad()
                    out.append("ok")
                except OSError as exc:
                    out.append(exc.errno)
            os.close(w)
            w = -1
            ep.register(r, select.EPOLLIN)
            out.append([(fd == r, ev) for fd, ev in ep.poll(0.5)])  # EOF: IN|HUP
        out.append(ep.closed)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        a.close()
        b.close()
    return out


def test_native_and_python_epoll_agree() -> None:
    native, python = scenario(NativeEpoll), scenario(PyEpoll)
    assert native == python
    assert native[-1] is True


@pytest.mark.parametrize("cls", [NativeEpoll, PyEpoll])
def test_poll_timeout_returns_empty(cls) -> None:
    r, w = os.pipe()
    with cls() as ep:
        ep.register(r)
        assert ep.poll(0.02) == []
    os.close(r)
    os.close(w)


@pytest.mark.parametrize("cls", [NativeEpoll, PyEpoll])
def test_closed_epoll_refuses_use(cls) -> None:
    ep = cls()
    ep.close()
    with pytest.raises(ValueError):
        ep.fileno()
