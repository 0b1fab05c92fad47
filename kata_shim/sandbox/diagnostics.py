"""What a VM sandbox that did not come up tells the user: exit status, stderr and console tails.

Shared by the QEMU and libvirt backends. `vm_exited` (Unavailable) is for a
hypervisor that exited (or was killed) before the guest agent answered;
`agent_silent` (DeadlineExceeded) for a guest that kept running but never
answered. Both carry the last lines of the hypervisor's stderr/log and of the
guest console, read from files in the sandbox state dir before it is removed.
Console text comes from the guest, which is untrusted: control characters are
replaced and every line is capped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
from collections.abc import Awaitable
from pathlib import Path

from kata_shim.errors import DeadlineExceeded, ShimError, Unavailable
from kata_shim.sandbox.dial import AgentAddress, VsockAddress
from kata_shim.sandbox.preflight import Origin

__all__ = [
    "agent_channel",
    "agent_silent",
    "block",
    "exit_text",
    "log_start_failure",
    "logged_start",
    "tail",
    "vm_exited",
]

log = logging.getLogger(__name__)

TAIL_LINES = 12
TAIL_BYTES = 16384
LINE_CAP = 240
PANIC_WINDOW = 80
_UNPRINTABLE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[^\t\x20-\x7e\u00a0-\uffff]")


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last non-empty lines of a log file (sanitised, capped); [] when absent.

    When a kernel panic line is near the end, the lines leading to it (and it) are
    returned instead of the call trace after it.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read().decode(errors="replace")
    except OSError:
        return []
    cleaned = (_UNPRINTABLE.sub("", line).rstrip() for line in data.splitlines())
    kept = [line[:LINE_CAP] for line in cleaned if line.strip()][-PANIC_WINDOW:]
    panics = [i for i, line in enumerate(kept) if "Kernel panic" in line]
    if panics and panics[-1] < len(kept) - lines:
        return kept[max(0, panics[-1] + 1 - lines) : panics[-1] + 1]
    return kept[-lines:]


def exit_text(returncode: int) -> str:
    """`exited with status 1` / `was killed by signal 9 (SIGKILL)`."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    number = -returncode
    name = ""
    with contextlib.suppress(ValueError):
        name = f" ({signal.Signals(number).name})"
    return f"was killed by signal {number}{name}"


def block(title: str, lines: list[str], inline: bool = True) -> str:
    """`; title: line` or `; title:` and indented lines; `(empty)` for none."""
    if not lines:
        return f"; {title}: (empty)"
    if len(lines) == 1 and inline:
        return f"; {title}: {lines[0].strip()}"
    return f"; {title}:\n" + "\n".join(f"    {line}" for line in lines)


def _exit_fix(returncode: int, origin: Origin) -> str:
    if returncode > 0:
        return (
            f"QEMU's stderr names what it rejected: correct that key in [{origin.section}] "
            f"of {origin.source or 'the configuration'}; `kata-shim check` verifies the host"
        )
    if returncode == 0:
        return (
            "the guest powered off or panicked during boot: read the console lines "
            "(kernel_params, kernel, initrd)"
        )
    return "something outside kata-shim killed QEMU (the OOM killer, an operator): see dmesg"


def vm_exited(
    what: str,
    returncode: int,
    elapsed: float,
    logs: tuple[Path, Path],
    origin: Origin,
    event: str = "",
) -> Unavailable:
    """The hypervisor is gone before the agent answered (bad option, crash, kill, panic).

    `logs` = (the hypervisor's stderr file, the guest console file); `event` = the QMP
    death event after which the backend ended the hypervisor, if that is what happened.
    """
    stderr, console = logs
    status = f"reported {event}, so kata-shim ended it," if event else exit_text(returncode)
    return Unavailable(
        f"{what} {status} {elapsed:.1f}s after launch, before the guest agent "
        f"answered; fix: {_exit_fix(0 if event else returncode, origin)}"
        f"{block('its stderr', tail(stderr, 6))}"
        f"{block('last lines of the guest console', tail(console), inline=False)}"
    )


def agent_silent(
    waited: float, channel: str, alive: str, agent_origin: Origin, console: Path
) -> DeadlineExceeded:
    """The VM runs but its agent never answered within dial_timeout."""
    return DeadlineExceeded(
        f"the guest agent did not answer within {waited:g}s on {channel}; {alive}; "
        f"fix: read the guest console below (kernel panic, missing module, /init failure); "
        f"on a slow host (TCG) raise {agent_origin.key('dial_timeout')}"
        f"{block('last lines of the guest console', tail(console), inline=False)}"
    )


def agent_channel(address: AgentAddress, serial_port: str) -> str:
    """How the agent was dialled: the vsock address, or the virtio-serial port and its host end."""
    if isinstance(address, VsockAddress):
        return str(address)
    return f"virtio-serial port {serial_port} (host socket {address})"


def log_start_failure(sandbox_id: str, exc: BaseException) -> None:
    """The full error, with the sandbox id, at error level (shim log and journald)."""
    if isinstance(exc, ShimError):
        log.error("sandbox %s: cannot start (%s): %s", sandbox_id, exc.code.name, exc.message)


async def logged_start(sandbox_id: str, start: Awaitable[None]) -> None:
    """Await a VM backend's start; a failure is logged in full, then re-raised."""
    try:
        await start
    except BaseException as exc:
        log_start_failure(sandbox_id, exc)
        raise
