"""Host side of the debug console: find a sandbox's console socket, bridge a terminal to it.

`console_socket(state_root, sandbox_id)` returns the socket or raises
ConsoleError with a one-line message saying how to fix it (no such sandbox,
local backend, libvirt backend, console not enabled). `attach(path)` copies
stdin → console and console → stdout: in raw mode when stdin is a terminal
(Ctrl-] detaches), as a plain copy otherwise (a pipe: at its EOF the shell
gets `exit`). It returns the shell's exit status, taken from the guest relay's
end marker (see kata_shim.debugconsole), 0 on detach, 1 when the sandbox went away.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import termios
import tty
from pathlib import Path

from kata_shim.debugconsole import CONSOLE_SOCKET, END_PREFIX, END_SUFFIX, write_all

__all__ = ["ConsoleError", "EndScanner", "attach", "console_socket"]

DETACH = b"\x1d"  # Ctrl-]
# At a pipe's end: finish a pending line, then `exit` (status of the last command).
# Not Ctrl-D: typed before the shell's line editor took the pty over, the line
# discipline turns it into a plain line end, and the shell would never see EOF.
PIPE_END = b"\nexit\n"
CHUNK = 65536


class ConsoleError(Exception):
    """The console cannot be reached; the message says why and what to do."""


def _enable_hint(sandbox_id: str) -> str:
    return (
        f"sandbox {sandbox_id} has no debug console (set debug_console_enabled = true in "
        "[hypervisor.qemu] or [agent.kata] of configuration.toml and recreate the pod)"
    )


def console_socket(state_root: Path, sandbox_id: str) -> Path:
    """The console socket of a running VM sandbox, or ConsoleError saying what is wrong."""
    directory = state_root / sandbox_id
    if not sandbox_id or "/" in sandbox_id or not directory.is_dir():
        raise ConsoleError(
            f"sandbox {sandbox_id!r} not found under {state_root} "
            "(list them with `kata-shim sandboxes`, or pass --state-dir)"
        )
    path = directory / CONSOLE_SOCKET
    if path.is_socket():
        return path
    if (directory / "vm").is_dir():
        raise ConsoleError(
            f"sandbox {sandbox_id} runs on the libvirt backend without a debug console (set "
            "debug_console_enabled = true in [hypervisor.libvirt] and recreate the pod)"
        )
    if not (directory / "qmp.sock").exists():
        raise ConsoleError(
            f"sandbox {sandbox_id} runs on the local backend: no VM, so no debug console "
            "(use `ctr task exec`, or a qemu sandbox with debug_console_enabled = true)"
        )
    raise ConsoleError(_enable_hint(sandbox_id))


class EndScanner:
    """Passes console output through, holding back (and decoding) the end marker."""

    def __init__(self) -> None:
        self._held = b""
        self.status: int | None = None

    def feed(self, data: bytes) -> bytes:
        """The bytes to show now; sets `status` once the marker was seen."""
        data = self._held + data
        self._held = b""
        start = data.find(END_PREFIX)
        if start >= 0:
            end = data.find(END_SUFFIX, start + len(END_PREFIX))
            if end < 0:
                self._held = data[start:]
                return data[:start]
            digits = data[start + len(END_PREFIX) : end]
            self.status = int(digits) if digits.lstrip(b"-").isdigit() else 1
            return data[:start]
        for keep in range(min(len(END_PREFIX) - 1, len(data)), 0, -1):
            if END_PREFIX.startswith(data[-keep:]):  # a marker may begin at the end
                self._held = data[-keep:]
                return data[:-keep]
        return data


def _bridge(sock: socket.socket, stdin: int, stdout: int, raw: bool) -> int:
    scanner = EndScanner()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(stdin, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == stdin:
                data = os.read(stdin, CHUNK)
                if raw and DETACH in data:
                    sock.sendall(data[: data.index(DETACH)])
                    return 0
                if not data:  # a pipe's end: let the shell see EOF, keep reading its output
                    poller.unregister(stdin)
                    data = PIPE_END
                sock.sendall(data)
                continue
            output = sock.recv(CHUNK)
            if not output:
                raise ConsoleError("the debug console closed: the sandbox stopped")
            write_all(stdout, scanner.feed(output))
            if scanner.status is not None:
                return scanner.status


def attach(path: Path, stdin: int = 0, stdout: int = 1) -> int:
    """Bridge the terminal (or pipes) to the console at `path`; the shell's exit status."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise ConsoleError(
            f"cannot connect to the debug console {path}: {exc.strerror or exc} "
            "(is the sandbox still running? see `kata-shim sandboxes`)"
        ) from exc
    raw = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if raw else None
    try:
        if raw:
            tty.setraw(stdin, termios.TCSANOW)  # not TCSAFLUSH: keep what was typed ahead
        return _bridge(sock, stdin, stdout, raw)
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()
