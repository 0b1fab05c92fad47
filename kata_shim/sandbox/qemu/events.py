"""VM-death detection from QEMU's QMP event stream (a second, read-only QMP monitor).

QEMU exits on a guest poweroff (`-no-reboot`, `panic=-1`), which the process
watch sees. The events cover what it cannot: a VM that stops running while
QEMU stays up (paused on an I/O error, a panic reported by a pvpanic device,
an unexpected STOP) is dead for the pod, too. The first such event ends
`watch_for_death`; the backend then kills QEMU so every task exits with 255.
The command monitor (qmp.sock) stays free for short-lived commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from qemu.qmp import QMPClient

__all__ = ["DEATH_EVENTS", "events_socket", "watch_for_death"]

log = logging.getLogger(__name__)

#: QMP events after which the guest will not run containers again
DEATH_EVENTS = frozenset({"SHUTDOWN", "GUEST_PANICKED", "GUEST_CRASHLOADED", "STOP"})


def events_socket(qmp_socket: Path) -> Path:
    """Where the events monitor listens, next to the command monitor."""
    return qmp_socket.with_name("qmp-events.sock")


async def watch_for_death(socket: Path, name: str, timeout: float = 30.0) -> str:
    """Connect to the events monitor and return the first death event's name (with its
    reason, if any). Runs until then; cancel it when QEMU is gone for another reason."""
    client = QMPClient(name)
    await asyncio.wait_for(client.connect(str(socket)), timeout)
    try:
        async for event in client.events:
            kind = str(event.get("event", ""))
            if kind in DEATH_EVENTS:
                data = event.get("data")
                reason = data.get("reason") if isinstance(data, dict) else None
                return f"{kind} ({reason})" if reason else kind
            log.debug("QMP event %s", kind)
    finally:
        with contextlib.suppress(Exception):  # EOF: QEMU is already gone
            await client.disconnect()
    return "QMP event stream ended"
