"""Compare the native and pure-Python vsock/epoll implementations against each other.

`python -m kata_shim.native.selftest vsock` runs INSIDE A GUEST VM ONLY: it uses
vsock loopback (CID 1) and refuses to run unless the kernel command line
carries `kata_shim.selftest=1`, a parameter only kata-shim's test guests get
(on the development hosts AF_VSOCK is the machine's own link to its host and
must not be touched). `epoll` mode runs anywhere. Prints JSON; exit 1 on any
mismatch, 2 when refused.
"""

from __future__ import annotations

import errno
import json
import os
import select
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kata_shim.native import epoll, vsock

GUARD = "kata_shim.selftest=1"
PORT_BASE = 7300


def guest_guard(cmdline: str | None = None) -> bool:
    text = cmdline if cmdline is not None else Path("/proc/cmdline").read_text()
    return GUARD in text.split()


def _outcome(fn: Callable[[], Any]) -> Any:
    """Result of fn(), or the errno name of the OSError it raised."""
    try:
        return fn()
    except OSError as exc:
        return f"OSError:{errno.errorcode.get(exc.errno or 0, exc.errno)}"


def _roundtrip(impl: type[vsock.NativeVsock] | type[vsock.PyVsock], port: int) -> dict[str, Any]:
    listener = impl.listen(vsock.VMADDR_CID_ANY, port)
    result: dict[str, Any] = {}

    def serve() -> None:
        conn, _peer = impl.accept(listener, 5.0)
        with conn:
            conn.sendall(conn.recv(64).upper())

    thread = threading.Thread(target=serve)
    thread.start()
    with impl.connect(vsock.VMADDR_CID_LOCAL, port, 5.0) as client:
        client.sendall(b"ping")
        result["echo"] = client.recv(64).decode()
    thread.join(5)
    result["accept_timeout"] = _outcome(lambda: impl.accept(listener, 0.2))
    listener.close()
    result["closed_port"] = _outcome(lambda: impl.connect(vsock.VMADDR_CID_LOCAL, port, 1.0))
    return result


def run_vsock() -> dict[str, Any]:
    native = _roundtrip(vsock.NativeVsock, PORT_BASE)
    python = _roundtrip(vsock.PyVsock, PORT_BASE + 1)
    return {"native": native, "python": python, "match": native == python}


def _epoll_case(cls: type[epoll.NativeEpoll] | type[epoll.PyEpoll]) -> list[Any]:
    r, w = os.pipe()
    try:
        with cls() as ep:
            ep.register(r, select.EPOLLIN)
            idle = ep.poll(0.05)
            os.write(w, b"x")
            ready = ep.poll(1.0)
            ep.unregister(r)
            bad = _outcome(lambda: ep.unregister(r))
            return [idle, [(fd == r, ev) for fd, ev in ready], bad]
    finally:
        os.close(r)
        os.close(w)


def run_epoll() -> dict[str, Any]:
    native, python = _epoll_case(epoll.NativeEpoll), _epoll_case(epoll.PyEpoll)
    return {"native": native, "python": python, "match": native == python}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else ""
    if mode == "epoll":
        report = run_epoll()
    elif mode == "vsock":
        if not guest_guard():
            print(
                f"refusing: vsock selftest runs only in a test guest ({GUARD} not on the "
                "kernel command line)",
                file=sys.stderr,
            )
            return 2
        report = run_vsock()
    else:
        print("usage: python -m kata_shim.native.selftest {vsock|epoll}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0 if report["match"] else 1


if __name__ == "__main__":
    sys.exit(main())
