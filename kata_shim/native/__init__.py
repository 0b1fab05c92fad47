"""Wrappers over the compiled cffi module kata_shim._native: epoll and AF_VSOCK.

One module per feature (epoll.py, vsock.py; selftest.py compares them) and only
these modules touch the cffi `ffi`/`lib` objects. Each feature has a pure-Python
twin with identical signatures and semantics, used when the module is not built;
`<module>.IMPLEMENTATION` says which one is active ("cffi" or "python").
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
