"""Checks run before a VM sandbox is launched, and shared with `kata-shim check`.

Only cheap, certain checks: the hypervisor binary is an executable file; the
kernel, initrd and firmware are readable files; the initrd starts like an
initramfs (cpio, or a compressed one); the guest image's manifest matches the
configured kernel and the configured initrd and carries 9p when shares use
9p; the share backend is one this shim has; `accel = "kvm"` only where KVM is
usable. Each finding is a `Problem` naming the path, the `[section] key` and
the configuration file it came from, and the fix; `Problem.error()` is the
`ShimError` the user sees (FailedPrecondition for the host, InvalidArgument
for the configuration).
"""

from __future__ import annotations

import json
import mmap
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kata_shim.errors import Code, FailedPrecondition, InvalidArgument, ShimError
from kata_shim.sandbox.rootimage import boot_files, root_image_problem

if TYPE_CHECKING:
    from kata_shim.sandbox.qemu.cmdline import QemuConfig

__all__ = [
    "DEFAULT_PATHS",
    "Origin",
    "Problem",
    "accel_problem",
    "binary_problem",
    "configured_path",
    "daemon_problem",
    "file_problem",
    "image_problems",
    "kernel_version",
    "launch_problems",
    "qemu_config",
    "shared_fs_problem",
]

DEFAULT_PATHS = {
    "path": "/usr/bin/qemu-system-x86_64",
    "kernel": "/var/lib/kata/vmlinux",
    "initrd": "/var/lib/kata/kata-shim-initrd.img",
}
#: shared_fs values per backend (the section of the table: hypervisor.qemu, hypervisor.libvirt)
SHARED_FS_SUPPORTED = {
    "hypervisor.qemu": ("virtio-9p", "virtio-fs", "none"),
    "hypervisor.libvirt": ("virtio-9p", "none"),
}
VIRTIOFSD_INSTALL = (
    "install virtiofsd (Debian 12: qemu-system-common ships /usr/lib/qemu/virtiofsd)"
)
CHECK_HINT = "`kata-shim check` reports every such problem on this host"
IMAGE_FIX = "run `kata-shim image build` (writes /var/lib/kata/vmlinux and kata-shim-initrd.img)"
QEMU_INSTALL = "install QEMU (apt-get install qemu-system-x86; dnf install qemu on openEuler)"

# How an initramfs can begin: cpio newc/crc/old binary, or a compressor the kernel unpacks.
_INITRD_MAGIC = (
    b"070701", b"070702", b"070707", b"\xc7\x71", b"\x71\xc7", b"\x1f\x8b", b"\x1f\x9e",
    b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"\x02\x21\x4c\x18", b"BZh", b"\x5d\x00\x00",
    b"\x89LZO",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Origin:
    """Where configuration keys come from: the file and the table."""

    source: str
    section: str

    def key(self, key: str, unset: bool = False) -> str:
        where = f" in {self.source}" if self.source else ""
        default = " (not set: the default)" if unset else ""
        return f"[{self.section}] {key}{default}{where}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: what is wrong (with the path and key), the fix, the status code."""

    what: str
    fix: str
    code: Code = Code.FAILED_PRECONDITION

    @property
    def message(self) -> str:
        return f"{self.what}; fix: {self.fix}"

    def error(self) -> ShimError:
        cls = InvalidArgument if self.code is Code.INVALID_ARGUMENT else FailedPrecondition
        return cls(self.message)


def configured_path(table: Mapping[str, Any], key: str) -> str:
    """The key's value, or the built-in default (QemuConfig's)."""
    return str(table.get(key) or DEFAULT_PATHS[key])


def binary_problem(
    path: str, origin: Origin, what: str = "QEMU", unset: bool = False
) -> Problem | None:
    """The hypervisor binary must be an executable regular file."""
    where = origin.key("path", unset)
    if not os.path.exists(path):
        return Problem(
            f"{what} {path} does not exist ({where})",
            f"{QEMU_INSTALL}, or set path to the QEMU binary; {CHECK_HINT}",
        )
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        return Problem(
            f"{what} {path} is not an executable file ({where})",
            f"chmod 0755 {path}, or set path to the QEMU binary; {CHECK_HINT}",
        )
    return None


def file_problem(
    path: str, key: str, origin: Origin, fix: str = IMAGE_FIX, unset: bool = False
) -> Problem | None:
    """A kernel, initrd or firmware file must exist, be a regular file and be readable."""
    where = origin.key(key, unset)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return Problem(f"{key} {path} does not exist ({where})", f"{fix}, or set {key}")
    except OSError as exc:
        return Problem(f"{key} {path} cannot be examined: {exc.strerror} ({where})", fix)
    if not stat.S_ISREG(info.st_mode):
        return Problem(f"{key} {path} is not a regular file ({where})", f"set {key} to a file")
    if not os.access(path, os.R_OK):
        return Problem(f"{key} {path} is not readable ({where})", f"chmod a+r {path}")
    return None


def initrd_format_problem(path: str, origin: Origin) -> Problem | None:
    """The initrd must start like a cpio archive or a compressed one."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_INITRD_MAGIC):
        return None
    return Problem(
        f"initrd {path} is not an initramfs (neither cpio nor a compressed cpio: "
        f"it starts with {head.hex()}) ({origin.key('initrd')})",
        f"{IMAGE_FIX}, or set initrd to the image's kata-shim-initrd.img",
    )


def kernel_version(path: str) -> str | None:
    """The release a kernel file was built as (bzImage header or ELF banner), if found."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(0x210)
            if head[0x202:0x206] == b"HdrS" and (pointer := int.from_bytes(head[0x20E:], "little")):
                handle.seek(pointer + 0x200)
                return handle.read(256).split(b"\0")[0].split(b" ")[0].decode(errors="replace")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                start = data.find(b"Linux version ")
                if start < 0:
                    return None
                banner = data[start + 14 : start + 142]
                return banner.split(b" ")[0].decode(errors="replace")
    except (OSError, ValueError):
        return None


def _manifest_for(initrd: str) -> dict[str, Any] | None:
    """The image manifest next to `initrd`, when it describes that very file."""
    path = Path(initrd).parent / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        recorded = str(manifest["initrd"]["path"])
        if not os.path.samefile(recorded, initrd):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    manifest["_path"] = str(path)
    return manifest if isinstance(manifest, dict) else None


def image_problems(kernel: str, initrd: str, shared_fs: str, origin: Origin) -> list[Problem]:
    """The guest image's manifest against the configured kernel, initrd and share backend."""
    manifest = _manifest_for(initrd)
    if manifest is None:
        return []
    where = manifest["_path"]
    rebuild = f"`kata-shim image build --force --out {Path(initrd).parent}`"
    problems = []
    size, recorded = os.path.getsize(initrd), manifest["initrd"].get("size")
    if recorded is not None and size != recorded:
        problems.append(Problem(
            f"initrd {initrd} is {size} bytes but its manifest {where} says {recorded}: "
            f"it was changed or damaged after the build ({origin.key('initrd')})",
            f"rebuild the image: {rebuild}",
        ))  # fmt: skip
    built_for = str(manifest.get("kernel", {}).get("version", ""))
    running = kernel_version(kernel)
    if built_for and running and built_for != running:
        problems.append(Problem(
            f"the guest image {initrd} was built for kernel {built_for} (its manifest {where}) "
            f"but kernel {kernel} is {running} ({origin.key('kernel')})",
            f"set kernel to {manifest['kernel'].get('path', 'the vmlinux of that build')}, "
            f"or rebuild the image for {running}: {rebuild}",
        ))  # fmt: skip
    modules = manifest.get("modules")
    if shared_fs == "virtio-fs" and isinstance(modules, list) and "virtiofs.ko" not in modules:
        problems.append(Problem(
            f"the guest image {initrd} has no virtiofs module (its manifest {where}) but "
            f"{origin.key('shared_fs')} is virtio-fs",
            f"rebuild the image (kata-shim >= this version adds virtiofs): {rebuild}",
        ))  # fmt: skip
    if shared_fs == "virtio-9p" and isinstance(modules, list) and "9p.ko" not in modules:
        problems.append(Problem(
            f"the guest image {initrd} has no 9p module (its manifest {where}) but "
            f"{origin.key('shared_fs')} is virtio-9p",
            "rebuild the image from a kernel with 9p (linux-image-amd64, not -cloud): "
            f"{rebuild}",
        ))  # fmt: skip
    return problems


def shared_fs_problem(table: Mapping[str, Any], origin: Origin) -> Problem | None:
    value = table.get("shared_fs", "virtio-9p")
    supported = SHARED_FS_SUPPORTED.get(origin.section, SHARED_FS_SUPPORTED["hypervisor.qemu"])
    if value in supported:
        return None
    names = " or ".join(v for v in supported if v != "none")
    return Problem(
        f"shared_fs = {value!r} is not available: kata-shim's {origin.section} backend shares "
        f"files with the guest over {names} only ({origin.key('shared_fs')})",
        'set shared_fs = "virtio-9p" (or "none" for no file sharing)',
        Code.INVALID_ARGUMENT,
    )


def daemon_problem(table: Mapping[str, Any], origin: Origin) -> Problem | None:
    """With virtio-fs, virtiofsd (`virtio_fs_daemon`) must be an executable file."""
    if table.get("shared_fs") != "virtio-fs":
        return None
    path = str(table.get("virtio_fs_daemon") or "/usr/lib/qemu/virtiofsd")
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return None
    where = origin.key("virtio_fs_daemon", unset=not table.get("virtio_fs_daemon"))
    return Problem(
        f"virtiofsd {path} is not an executable file ({where}); shared_fs is virtio-fs",
        f'{VIRTIOFSD_INSTALL}, set virtio_fs_daemon to it, or set shared_fs = "virtio-9p"',
    )


def accel_problem(
    table: Mapping[str, Any],
    origin: Origin,
    dev: Path = Path("/dev/kvm"),
    sys_module: Path = Path("/sys/module"),
) -> Problem | None:
    value = table.get("accel", "auto")
    if value not in ("auto", "kvm", "tcg"):
        return Problem(
            f"accel = {value!r} is not an accelerator ({origin.key('accel')})",
            'set accel = "auto", "kvm" or "tcg"',
            Code.INVALID_ARGUMENT,
        )
    from kata_shim.sandbox.qemu.accel import kvm_unusable_reason  # (qemu imports this module)

    reason = kvm_unusable_reason(dev, sys_module) if value == "kvm" else None
    if reason is None:
        return None
    return Problem(
        f'accel = "kvm" but KVM is unusable on this host: {reason} ({origin.key("accel")})',
        f'set accel = "auto" (TCG where KVM is unusable) or "tcg"; {CHECK_HINT}',
    )


def qemu_config(table: Mapping[str, Any], origin: Origin) -> QemuConfig:
    """The backend's QemuConfig; a bad value names the table and the file."""
    from kata_shim.sandbox.qemu.cmdline import QemuConfig

    if (problem := shared_fs_problem(table, origin)) is not None:
        raise problem.error()
    try:
        return QemuConfig.from_table(table)
    except InvalidArgument as exc:
        where = f" in {origin.source}" if origin.source else ""
        raise InvalidArgument(f"{exc.message} ([{origin.section}]{where})") from exc


def launch_problems(table: Mapping[str, Any], origin: Origin) -> list[Problem]:
    """Everything wrong with launching a VM from this `[hypervisor.*]` table, most basic first."""
    qemu = configured_path(table, "path")
    problems = [p for p in (binary_problem(qemu, origin, unset=not table.get("path")),) if p]
    config_problems = [p for p in (shared_fs_problem(table, origin),) if p is not None]
    if (problem := daemon_problem(table, origin)) is not None:
        problems.append(problem)
    image, _ = boot_files(table)  # the root image design (sandbox/rootimage.py) or initrd
    files = {key: configured_path(table, key) for key in ("kernel", "initrd")[: 1 + (not image)]}
    for key, path in files.items():
        if (problem := file_problem(path, key, origin, unset=not table.get(key))) is not None:
            problems.append(problem)
    if table.get("firmware"):
        fix = "install the firmware package (ovmf / edk2-ovmf), or unset firmware"
        if (problem := file_problem(str(table["firmware"]), "firmware", origin, fix)) is not None:
            problems.append(problem)
    if image and (reason := root_image_problem(image)) is not None:
        where = origin.key("image", unset=not table.get("image"))
        problems.append(Problem(f"{reason[0]} ({where})", reason[1]))
    elif not problems and not image:
        if (problem := initrd_format_problem(files["initrd"], origin)) is not None:
            problems.append(problem)
        else:
            shared = str(table.get("shared_fs", "virtio-9p"))
            problems += image_problems(files["kernel"], files["initrd"], shared, origin)
    if (problem := accel_problem(table, origin)) is not None:
        problems.append(problem)
    return config_problems + problems
