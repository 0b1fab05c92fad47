"""Wrappers over the compiled cffi module kata_shim._native (epoll, AF_VSOCK).

Only these modules touch `ffi`/`lib`; each offers a pure-Python fallback with
the same signature, used when the extension is not built.
"""
