"""Wrappers over the compiled cffi module kata_shim._native: AF_VSOCK.

vsock.py is the only module that touches the cffi `ffi`/`lib` objects (selftest.py
compares it with its twin in a test guest). It has a pure-Python twin with identical
signatures and semantics, used when the module is not built; `vsock.IMPLEMENTATION`
says which one is active ("cffi" or "python"). epoll is the event loop's (uvloop's
libuv, or asyncio's selectors): no wrapper of our own.
"""

from __future__ import annotations

from typing import Any

__all__ = ["native_lib"]


def native_lib() -> tuple[Any, Any]:
    """(ffi, lib) of kata_shim._native, or (None, None) when it is not built."""
    try:
        from kata_shim._native import ffi, lib
    except ImportError:  # pragma: no cover - only without the built extension
        return None, None
    return ffi, lib
