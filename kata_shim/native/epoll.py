"""epoll through the cffi module, with select.epoll as the pure-Python fallback.

`NativeEpoll` and `PyEpoll` have the same methods and results (those of
select.epoll: register/modify/unregister/poll/close/fileno); `Epoll` is the
native one when kata_shim._native is built.
"""

from __future__ import annotations

import abc
import os
import select
from types import TracebackType
from typing import Self

__all__ = ["IMPLEMENTATION", "Epoll", "NativeEpoll", "PyEpoll"]

try:
    from kata_shim._native import ffi as _ffi
    from kata_shim._native import lib as _lib
except ImportError:  # pragma: no cover - only without the built extension
    _ffi = _lib = None

_MAX_EVENTS = 256
# epoll_ctl(2) operations (not exported by the select module)
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3


def _check(rc: int) -> int:
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc))
    return rc


class _EpollBase(abc.ABC):
    """The select.epoll-shaped API both implementations provide."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def fileno(self) -> int: ...

    @abc.abstractmethod
    def register(self, fd: int, eventmask: int = select.EPOLLIN) -> None: ...

    @abc.abstractmethod
    def modify(self, fd: int, eventmask: int) -> None: ...

    @abc.abstractmethod
    def unregister(self, fd: int) -> None: ...

    @abc.abstractmethod
    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        """Ready (fd, events) pairs; timeout in seconds, None or negative = forever."""


class NativeEpoll(_EpollBase):
    """epoll via kata_shim._native."""

    def __init__(self) -> None:
        if _lib is None:
            raise ImportError("kata_shim._native is not built")
        self._fd = _check(_lib.ks_epoll_create(1))
        self._fds = _ffi.new("int[]", _MAX_EVENTS)
        self._events = _ffi.new("uint32_t[]", _MAX_EVENTS)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed epoll object")
        return self._fd

    def register(self, fd: int, eventmask: int = select.EPOLLIN) -> None:
        _check(_lib.ks_epoll_ctl(self.fileno(), EPOLL_CTL_ADD, fd, eventmask))

    def modify(self, fd: int, eventmask: int) -> None:
        _check(_lib.ks_epoll_ctl(self.fileno(), EPOLL_CTL_MOD, fd, eventmask))

    def unregister(self, fd: int) -> None:
        _check(_lib.ks_epoll_ctl(self.fileno(), EPOLL_CTL_DEL, fd, 0))

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        """Ready (fd, events) pairs; timeout in seconds, None or negative = forever."""
        timeout_ms = -1 if timeout is None or timeout < 0 else int(timeout * 1000)
        count = _MAX_EVENTS if maxevents <= 0 else min(maxevents, _MAX_EVENTS)
        n = _check(_lib.ks_epoll_wait(self.fileno(), self._fds, self._events, count, timeout_ms))
        return [(self._fds[i], self._events[i]) for i in range(n)]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class PyEpoll(_EpollBase):
    """The same API over select.epoll."""

    def __init__(self) -> None:
        self._ep = select.epoll()

    @property
    def closed(self) -> bool:
        return self._ep.closed

    def fileno(self) -> int:
        return self._ep.fileno()

    def register(self, fd: int, eventmask: int = select.EPOLLIN) -> None:
        self._ep.register(fd, eventmask)

    def modify(self, fd: int, eventmask: int) -> None:
        self._ep.modify(fd, eventmask)

    def unregister(self, fd: int) -> None:
        self._ep.unregister(fd)

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        count = _MAX_EVENTS if maxevents <= 0 else min(maxevents, _MAX_EVENTS)
        return self._ep.poll(-1 if timeout is None else timeout, count)

    def close(self) -> None:
        self._ep.close()


Epoll: type[NativeEpoll] | type[PyEpoll] = NativeEpoll if _lib is not None else PyEpoll
IMPLEMENTATION = "cffi" if _lib is not None else "python"
