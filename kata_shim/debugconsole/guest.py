"""Guest side of the debug console: a shell on a pty, bridged to a virtio-serial port.

Started by the guest /init (`python3 -m kata_shim.debugconsole.guest console.0`)
when the kernel command line has kata_shim.debug_console=1; independent of the
agent, so it still works when the agent is stuck. One session per host
connection: when the host end connects (the port stops reporting POLLHUP) a
`/bin/sh -i` starts on a fresh pty; bytes are copied both ways; when the shell
exits the relay sends END_PREFIX<status>END_SUFFIX and waits for the host to
go; when the host goes first the shell gets SIGHUP (then SIGKILL). The port
stays open for the relay's lifetime (a virtio-serial port must be held open,
see docs/observability.md). Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

from kata_shim.debugconsole import CONSOLE_PORT, END_PREFIX, END_SUFFIX, write_all

__all__ = ["find_port", "main"]

VIRTIO_PORTS = Path("/sys/class/virtio-ports")
IDLE_POLL = 0.25  # seconds between checks while no host is connected
CHUNK = 65536
SHELL = "/bin/sh"


def find_port(name: str, root: Path = VIRTIO_PORTS, timeout: float = 30.0) -> Path:
    """/dev/<vportNpM> whose sysfs name is `name` (the guest has no udev symlinks)."""
    deadline = time.monotonic() + timeout
    while True:
        for port in sorted(root.glob("*")):
            with contextlib.suppress(OSError):
                if (port / "name").read_text().strip() == name:
                    return Path("/dev") / port.name
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"no virtio-serial port named {name}")
        time.sleep(0.05)


def _host_connected(port: int) -> bool:
    """No POLLHUP on the port: a host client is connected (virtio_console semantics)."""
    return not any(events & select.POLLHUP for _, events in _poll(port, 0))


def _poll(fd: int, timeout_ms: int) -> list[tuple[int, int]]:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return poller.poll(timeout_ms)


def _spawn_shell() -> tuple[int, int]:
    pid, master = pty.fork()  # the child: new session, the pty as controlling tty
    if pid == 0:
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root", "TERM": "linux"}
        env["PS1"] = "debug-console# "
        try:
            os.execve(SHELL, ["sh", "-i"], env)
        finally:
            os._exit(127)
    return pid, master


def _end_shell(pid: int) -> int:
    """SIGHUP the shell's session, SIGKILL after 1 s; return its exit status."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGHUP)
    for _ in range(20):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _relay(port: int, master: int) -> bool:
    """Copy until the shell ends (True) or the host goes away (False)."""
    poller = select.poll()
    poller.register(port, select.POLLIN)
    poller.register(master, select.POLLIN)
    while True:
        for fd, events in poller.poll():
            if fd == master:
                try:
                    data = os.read(master, CHUNK)
                except OSError:  # EIO: the shell and every holder of the pty are gone
                    data = b""
                if not data:
                    return True
                try:
                    write_all(port, data)
                except OSError:
                    return False
                continue
            data = os.read(port, CHUNK) if events & select.POLLIN else b""
            if not data:  # no data and POLLHUP: the host end closed
                return False
            write_all(master, data)


def session(port: int) -> None:
    """One shell for one host connection."""
    pid, master = _spawn_shell()
    try:
        shell_ended = _relay(port, master)
    finally:
        os.close(master)
    if not shell_ended:
        _end_shell(pid)
        return
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    with contextlib.suppress(OSError):
        write_all(port, END_PREFIX + str(status).encode() + END_SUFFIX)
    while _host_connected(port):  # drain whatever the host still sends, until it goes
        for _, events in _poll(port, 1000):
            if events & select.POLLIN:
                with contextlib.suppress(OSError):
                    os.read(port, CHUNK)


def serve(port: int) -> None:
    while True:
        if not _host_connected(port):
            time.sleep(IDLE_POLL)
            continue
        session(port)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    device = find_port(args[0] if args else CONSOLE_PORT)
    port = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    print(f"kata-shim debug console on {device}", file=sys.stderr, flush=True)
    serve(port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
