"""The debug console: a shell in the guest on a second virtio-serial port, and its host end.

Names shared by the QEMU command line, the guest relay (guest.py), the host
client (client.py) and the management endpoint, and the relays' `write_all`.
Standard library only.
"""

from __future__ import annotations

import os

__all__ = [
    "CONSOLE_PORT",
    "CONSOLE_SOCKET",
    "END_PREFIX",
    "END_SUFFIX",
    "KERNEL_PARAM",
    "write_all",
]

#: the virtio-serial port's name (/sys/class/virtio-ports/*/name in the guest)
CONSOLE_PORT = "console.0"
#: its host end, a unix socket QEMU listens on, in the sandbox state dir
CONSOLE_SOCKET = "console.sock"
#: on the kernel command line when the console is enabled (read by the guest /init)
KERNEL_PARAM = "kata_shim.debug_console=1"
#: the guest relay ends a session with this OSC sequence carrying the shell's exit
#: status (terminals ignore unknown OSC strings): ESC ] kata-shim;exit=<n> BEL
END_PREFIX = b"\x1b]kata-shim;exit="
END_SUFFIX = b"\x07"


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to a blocking fd (a terminal, pipe or virtio-serial port)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
