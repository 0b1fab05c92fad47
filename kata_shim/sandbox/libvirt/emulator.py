"""libvirt's `<emulator>` for sandbox domains: QEMU under our jail (docs/security.md).

libvirt starts QEMU itself, so the seccomp filter that qemu/jail.py puts
under a directly started QEMU (no setuid/setgid mode, no device node through
the 9p server) must come from the emulator libvirt runs. `install_wrapper`
writes a small shell script that execs `<python> -I -c <ENTRY> <qemu> "$@"`
(ENTRY calls `main`; not `-m`, since importing this package imports this
module first). `main` runs the jail in-process: it loads the filter and execs
QEMU with libvirt's arguments (exec keeps the pid that libvirt reads from
QEMU's pidfile).

* The script is named after a hash of its content and written only when
  missing, so its ctime stays put and libvirt's capability cache (keyed by
  the emulator path and its ctime) stays valid across sandboxes. libvirt
  probes it like any QEMU, as qemu.conf's `user` (libvirt-qemu), with the
  jail loaded: the directory and the script are root-owned and world-readable,
  never writable by anyone else, and outside every sandbox's share.
* Per-domain jail options (`JAIL_ENV`, a JSON list of strings) reach the
  jail through libvirt's `<qemu:env>`; they go before the jail's `--`.
* libvirt adds its own `-sandbox` (qemu.conf `seccomp_sandbox`, on by
  default), which stacks on the jail's filter. But with the domain's static
  root label libvirt 9.0 left QEMU almost every capability (measured, with
  `clear_emulator_capabilities` on). So when the
  wrapper runs with CAP_SETPCAP and a wider bounding set than
  confine.QEMU_CAPS, the jail execs QEMU through `setpriv` exactly as the
  QEMU backend does (confine.py): only QEMU_CAPS, no_new_privs. Unprivileged
  (libvirt's capability probe as libvirt-qemu) there is nothing to drop.
* The pod's NICs: when the domain's `<qemu:env>` has nicpass.NICS_ENV, the
  wrapper first fetches the tap fds from the shim's socket, checks them and
  appends a `-netdev tap,fd=N` + virtio-net device per tap to QEMU's argv
  (nicpass.py); if that fails it exits and QEMU never runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from kata_shim.errors import FailedPrecondition
from kata_shim.sandbox.qemu.confine import QEMU_CAPS

__all__ = ["JAIL_ENV", "WRAPPER_DIR", "install_wrapper", "main", "wrapper_script"]

#: root-owned, outside every sandbox state dir (the state root lists sandboxes)
WRAPPER_DIR = Path("/run/kata-shim-emulators")
JAIL_ENV = "KATA_SHIM_JAIL_OPTIONS"
CAP_SETPCAP = 8
#: bit numbers of confine.QEMU_CAPS (linux/capability.h)
CAP_BITS = {"chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3}
ENTRY = "from kata_shim.sandbox.libvirt.emulator import main; main()"


def wrapper_script(qemu: str, python: str = sys.executable) -> str:
    command = shlex.join([python, "-I", "-c", ENTRY, qemu])
    return (
        "#!/bin/sh\n"
        "# kata-shim: libvirt's emulator for sandbox domains, QEMU under kata-shim's jail\n"
        f'exec {command} "$@"\n'
    )


def _check_dir(directory: Path) -> None:
    st = directory.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise FailedPrecondition(
            f"{directory} must be a directory owned by uid {os.geteuid()} and writable by "
            f"nobody else (it holds the QEMU wrapper libvirt runs as root); remove it"
        )


def install_wrapper(qemu: str, directory: Path = WRAPPER_DIR) -> Path:
    """The wrapper for `qemu` in `directory`, written (atomically) unless already there."""
    if not os.path.isabs(qemu) or not os.access(qemu, os.X_OK):
        raise FailedPrecondition(f"QEMU {qemu!r} is not an executable absolute path")
    text = wrapper_script(qemu)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = directory / f"qemu-jail-{digest}"
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_dir(directory)
    if directory.stat().st_mode & 0o755 != 0o755:  # a umask: libvirt's probe runs unprivileged
        directory.chmod(0o755)
    try:
        if path.read_text() == text:
            return path
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".qemu-jail-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            os.fchmod(out.fileno(), 0o755)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def _capabilities(status: str) -> tuple[int, int]:
    """(effective, bounding) capability masks from /proc/<pid>/status text."""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["CapEff"], 16), int(fields["CapBnd"], 16)


def drop_prefix(status: str) -> list[str]:
    """`setpriv ... --` keeping only QEMU_CAPS when this process can and must drop more."""
    effective, bounding = _capabilities(status)
    keep = sum(1 << CAP_BITS[name] for name in QEMU_CAPS)
    if not effective & (1 << CAP_SETPCAP) or not bounding & ~keep:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        sys.exit("kata-shim emulator: setpriv (util-linux) is needed to drop QEMU's capabilities")
    caps = ",".join(f"+{name}" for name in QEMU_CAPS)
    return [setpriv, f"--bounding-set=-all,{caps}", "--inh-caps=-all", "--no-new-privs", "--"]


def _jail_options() -> list[str]:
    raw = os.environ.pop(JAIL_ENV, "")
    try:
        options = json.loads(raw) if raw else []
    except ValueError:
        options = None
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        sys.exit(f"kata-shim emulator: {JAIL_ENV} must be a JSON list of strings, got {raw!r}")
    return options


def _nic_args(qemu_args: list[str]) -> list[str]:
    """QEMU's arguments for the pod's taps, fetched from the shim (nicpass.py); none
    when the domain has no NICS_ENV. Any failure ends the wrapper: QEMU must not run."""
    from kata_shim.sandbox.libvirt import nicpass

    raw = os.environ.pop(nicpass.NICS_ENV, "")
    if not raw:
        return []
    try:
        return nicpass.receive(nicpass.parse_env(raw), qemu_args)
    except nicpass.HandoffError as exc:
        sys.exit(f"kata-shim emulator: {exc}; QEMU not started")


def main(argv: list[str] | None = None) -> None:
    """`python -c ENTRY QEMU [QEMU args...]` (the wrapper): exec QEMU under the jail."""
    from kata_shim.sandbox.qemu import jail

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.exit(f"usage: python -c {ENTRY!r} QEMU [args...]")
    options = _jail_options()
    nics = _nic_args(args)
    prefix = drop_prefix(Path("/proc/self/status").read_text())
    jail.main([*options, "--", *prefix, *args, *nics])
