"""What QEMU may do on the host: its seccomp sandbox and its capabilities (docs/security.md).

* `-sandbox <seccompsandbox>` (Kata's key), on by default with every optional
  filter: obsolete syscalls, privilege changes, fork/exec and scheduler/CPU
  affinity changes are denied — a `spawn` through QMP kills QEMU (SIGSYS).
  `seccompsandbox = "off"` (or "") leaves it off.
* QEMU starts under our seccomp filter (qemu/jail.py: no setuid/setgid mode,
  no device node can be made through the 9p server), then through
  util-linux's `setpriv`, which execs it with a bounding
  set of only the capabilities its 9p server needs (`QEMU_CAPS`); as root,
  its permitted and effective sets become exactly that set, the inheritable
  and ambient sets are empty and no_new_privs is set. Without CAP_FSETID the
  kernel strips setuid/setgid bits from any host file QEMU writes; without
  CAP_MKNOD, CAP_SYS_ADMIN, CAP_SETUID, ... it cannot create devices, mount
  or change identity even if the guest takes it over.
* It keeps CAP_CHOWN (files the container creates keep its user's owner), but
  every chown goes through the shim's owner guard (qemu/ownerguard.py), which
  the jail hands its seccomp listener to.
"""

from __future__ import annotations

import shutil
import sys

from kata_shim.errors import FailedPrecondition

__all__ = [
    "DEFAULT_SANDBOX",
    "JAIL_MODULE",
    "QEMU_CAPS",
    "confine_prefix",
    "jailed",
    "sandbox_args",
]

DEFAULT_SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

JAIL_MODULE = "kata_shim.sandbox.qemu.jail"
#: 9p serves (and chowns, chmods, times) files of any owner in the container's rootfs.
QEMU_CAPS = ("chown", "dac_override", "dac_read_search", "fowner")


def sandbox_args(seccompsandbox: str) -> list[str]:
    value = seccompsandbox.strip()
    if value in ("", "off"):
        return []
    return ["-sandbox", value]


def confine_prefix(
    caps: tuple[str, ...] = QEMU_CAPS, jail_options: tuple[str, ...] = ()
) -> list[str]:
    """argv that execs what follows under the jail's filter (with `jail_options`) with only
    `caps` (QEMU's, or virtiofsd's: qemu/virtiofsd.py)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FailedPrecondition(
            "setpriv (util-linux) is not installed: it is needed to drop QEMU's "
            "capabilities; install util-linux"
        )
    keep = ",".join(f"+{cap}" for cap in caps)
    jail = [sys.executable, "-m", JAIL_MODULE, *jail_options, "--"]
    return [
        *jail,
        setpriv,
        f"--bounding-set=-all,{keep}",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ]


def jailed(argv: list[str]) -> bool:
    """True when `argv` starts QEMU under the jail (whose chowns the owner guard answers)."""
    return JAIL_MODULE in argv[:4]
