"""Run the native (cffi) and the pure-Python vsock implementations against each other.

`python -m kata_shim.native.selftest vsock` runs INSIDE A TEST GUEST ONLY, over vsock
loopback (CID 1): it refuses (exit 2) unless the kernel command line carries
`kata_shim.selftest=1`, which only kata-shim's test guests get (on development hosts
AF_VSOCK is the machine's own link to its hypervisor and must never be touched).
Prints one JSON report; exit 0 when both implementations
agree and meet the expected results, 1 otherwise, 2 on refusal or bad usage.
The connect-timeout case needs the loopback handshake to lose against a zero-timeout
poll: it runs under SCHED_FIFO (one vCPU); without that, only validity is checked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kata_shim.native import vsock

__all__ = ["GUARD", "guest_guard", "main", "run_vsock"]

GUARD = "kata_shim.selftest=1"
PORT_BASE = 7300
PAYLOAD = b"ping" * 16384  # 64 KiB: more than one read
EXPECTED = {
    "accept_timeout": "OSError:ETIMEDOUT",
    "accept_waited": True,
    "fds_leaked": 0,
    "listener": {"blocking": True, "cloexec": True},
}
RACY = "connect_timeout"


def guest_guard(cmdline: str | None = None) -> bool:
    """True only on a test guest's kernel command line."""
    if cmdline is None:
        try:
            cmdline = Path("/proc/cmdline").read_text()
        except OSError:
            return False
    return GUARD in cmdline.split()


def _errname(exc: OSError) -> str:
    return f"OSError:{errno.errorcode.get(exc.errno or 0, exc.errno)}"


def _outcome(fn: Callable[[], Any]) -> Any:
    """fn()'s result, or "OSError:<errno name>" for the OSError it raised."""
    try:
        return fn()
    except OSError as exc:
        return _errname(exc)


def _flags(fd: int) -> dict[str, bool]:
    cloexec = bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    return {"blocking": os.get_blocking(fd), "cloexec": cloexec}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- vsock
def _serve_once(server: vsock.Vsock, listener: int, box: dict[str, Any]) -> None:
    try:
        fd, cid, port = server.vsock_accept(listener, 10.0)
        box.update(accepted=_flags(fd), peer_cid=cid, peer_port=port)
        with socket.socket(fileno=fd) as conn:
            conn.sendall(_recv_all(conn).upper())
    except OSError as exc:
        box["server_error"] = _errname(exc)


def _exchange(server: vsock.Vsock, client: vsock.Vsock, port: int) -> dict[str, Any]:
    """Listen with `server`, connect with `client`, send PAYLOAD, get it back upper-cased."""
    listener = server.vsock_listen(vsock.VMADDR_CID_ANY, port, 8)
    box: dict[str, Any] = {}
    thread = threading.Thread(target=_serve_once, args=(server, listener, box))
    thread.start()
    result: dict[str, Any] = {"local_port": None}
    try:
        _client_side(client, port, result)
    except OSError as exc:
        result["client_error"] = _errname(exc)
    finally:
        thread.join(15)
        os.close(listener)
    peer_port, local_port = box.pop("peer_port", None), result.pop("local_port")
    return {**result, **box, "peer_port_is_client": peer_port == local_port}


def _client_side(client: vsock.Vsock, port: int, result: dict[str, Any]) -> None:
    fd = client.vsock_connect(vsock.VMADDR_CID_LOCAL, port, 10.0)
    result["connected"] = _flags(fd)
    with socket.socket(fileno=fd) as sock:
        result["local_port"] = sock.getsockname()[1]
        sock.sendall(PAYLOAD)
        sock.shutdown(socket.SHUT_WR)
        reply = _recv_all(sock)
    result.update(echo_ok=reply == PAYLOAD.upper(), reply_head=reply[:4].decode())


def _connect_closed(impl: vsock.Vsock, port: int) -> Any:
    return _outcome(lambda: os.close(impl.vsock_connect(vsock.VMADDR_CID_LOCAL, port, 5.0)))


@contextlib.contextmanager
def _realtime() -> Iterator[bool]:
    """SCHED_FIFO for this thread, so the loopback worker cannot finish a handshake
    before a zero-timeout poll (the test guest has one vCPU). Yields False if refused."""
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, policy, param)


def _connect_timeouts(impl: vsock.Vsock, port: int, attempts: int = 5) -> dict[str, Any]:
    """Zero-timeout connects to a listener that never accepts: ETIMEDOUT (or connected)."""
    listener = impl.vsock_listen(vsock.VMADDR_CID_ANY, port, 128)
    seen = set()
    try:
        with _realtime() as realtime:
            for _ in range(attempts):
                result = _outcome(lambda: impl.vsock_connect(vsock.VMADDR_CID_LOCAL, port, 0))
                if isinstance(result, int):
                    os.close(result)
                    result = "connected"
                seen.add(result)
    finally:
        os.close(listener)
    return {"outcomes": sorted(seen), "realtime": realtime}


def _accept_timeout(impl: vsock.Vsock, port: int) -> dict[str, Any]:
    listener = impl.vsock_listen(vsock.VMADDR_CID_ANY, port, 8)
    try:
        started = time.monotonic()
        outcome = _outcome(lambda: impl.vsock_accept(listener, 0.2))
        waited = time.monotonic() - started >= 0.19
        return {"accept_timeout": outcome, "accept_waited": waited, "listener": _flags(listener)}
    finally:
        os.close(listener)


def _impl_cases(impl: vsock.Vsock, port: int) -> dict[str, Any]:
    before = _open_fds()
    result: dict[str, Any] = {"exchange": _exchange(impl, impl, port)}
    result.update(_accept_timeout(impl, port + 1))
    result["closed_port"] = _connect_closed(impl, port + 2)
    result[RACY] = _connect_timeouts(impl, port + 3)
    result["fds_leaked"] = _open_fds() - before
    return result


def _exchange_problems(where: str, exchange: dict[str, Any]) -> list[str]:
    want = {
        "echo_ok": True,
        "reply_head": "PING",
        "peer_cid": vsock.VMADDR_CID_LOCAL,
        "peer_port_is_client": True,
        "connected": {"blocking": True, "cloexec": True},
        "accepted": {"blocking": True, "cloexec": True},
    }
    return [
        f"{where}.{k}={exchange.get(k)!r}, want {v!r}"
        for k, v in want.items()
        if exchange.get(k) != v
    ]


def _problems(report: dict[str, Any]) -> list[str]:
    native, python = report["native"], report["python"]
    realtime = native[RACY]["realtime"] and python[RACY]["realtime"]
    problems = [
        f"{k}: native={native[k]!r} python={python[k]!r}"
        for k in native
        if (k != RACY or realtime) and native[k] != python[k]
    ]
    for name in ("native", "python"):
        got = report[name]
        problems += [
            f"{name}.{k}={got[k]!r}, want {v!r}" for k, v in EXPECTED.items() if got[k] != v
        ]
        if got["closed_port"] not in ("OSError:ECONNRESET", "OSError:ECONNREFUSED"):
            problems.append(f"{name}.closed_port={got['closed_port']!r}")
        valid = {"OSError:ETIMEDOUT"} if realtime else {"OSError:ETIMEDOUT", "connected"}
        if not set(got[RACY]["outcomes"]) <= valid:
            problems.append(f"{name}.{RACY}={got[RACY]!r}")
        problems += _exchange_problems(f"{name}.exchange", got["exchange"])
    for pair, exchange in report["cross"].items():
        problems += _exchange_problems(f"cross[{pair}]", exchange)
    return problems


def run_vsock() -> dict[str, Any]:
    """Both implementations over vsock loopback, then each against the other. Guest only."""
    report: dict[str, Any] = {"mode": "vsock", "native_built": vsock.IMPLEMENTATION == "cffi"}
    impls = {"native": vsock.NATIVE, "python": vsock.PYTHON}
    for offset, (name, impl) in enumerate(impls.items()):
        report[name] = _impl_cases(impl, PORT_BASE + 10 * offset)
    report["cross"] = {
        "native-listens/python-connects": _exchange(vsock.NATIVE, vsock.PYTHON, PORT_BASE + 20),
        "python-listens/native-connects": _exchange(vsock.PYTHON, vsock.NATIVE, PORT_BASE + 21),
    }
    problems = _problems(report)
    if not report["native_built"]:
        problems.insert(0, "kata_shim._native is not built: nothing native to compare")
    return {**report, "problems": problems, "match": not problems}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["vsock"]:
        print("usage: python -m kata_shim.native.selftest vsock", file=sys.stderr)
        return 2
    if not guest_guard():
        print(
            f"refusing to run the vsock self-test: it runs only inside a kata-shim test guest "
            f"({GUARD!r} is not on the kernel command line); on this machine AF_VSOCK is the "
            "link to its hypervisor",
            file=sys.stderr,
        )
        return 2
    report = run_vsock()
    print(json.dumps(report, sort_keys=True))
    return 0 if report["match"] else 1


if __name__ == "__main__":
    sys.exit(main())
