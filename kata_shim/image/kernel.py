"""Guest kernel pieces from the host's Debian kernel package.

Picks an installed kernel that has 9p (Debian's generic `linux-image-amd64`;
the cloud kernel lacks it), extracts the ELF `vmlinux` from the compressed
bzImage for PVH direct boot (QEMU `-kernel`, no in-guest decompression), and
lists the modules the guest needs, with their dependencies, in load order
(`modprobe --show-depends`), decompressing .ko.xz/.ko.zst when needed.
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GUEST_MODULES", "Kernel", "extract_vmlinux", "find_kernel", "module_paths"]

# What the guest loads: virtio transports and console, 9p and virtio-fs sharing, vsock
# (including loopback, CID 1, for self-tests), overlayfs, entropy, virtio-net, the
# balloon (free page reporting: freed guest pages go back to the host).
GUEST_MODULES = (
    "virtio_pci",
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "9p",
    "9pnet_virtio",
    "virtiofs",  # shared_fs = "virtio-fs" (needs fuse)
    "vmw_vsock_virtio_transport",
    "vsock_loopback",
    "overlay",
    "virtio_rng",
    "virtio_net",  # pod networking (needs net_failover, failover)
    "virtio_balloon",
)

_XZ_MAGIC = b"\xfd7zXZ\x00"
_LZ4_MAGIC = b"\x02\x21\x4c\x18"


class KernelError(RuntimeError):
    """No usable guest kernel, or the bzImage could not be unpacked."""


@dataclass(frozen=True, slots=True)
class Kernel:
    version: str
    vmlinuz: Path
    modules_dir: Path


def _has_9p(modules_dir: Path) -> bool:
    return any(modules_dir.glob("kernel/fs/9p/9p.ko*"))


def _version_key(version: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", version)]


def find_kernel(version: str | None = None, boot: Path = Path("/boot")) -> Kernel:
    """The requested kernel, else the newest installed one with 9p support."""
    candidates = []
    for vmlinuz in boot.glob("vmlinuz-*"):
        ver = vmlinuz.name.removeprefix("vmlinuz-")
        modules_dir = Path("/lib/modules") / ver
        if (version is None or ver == version) and _has_9p(modules_dir):
            candidates.append(Kernel(ver, vmlinuz, modules_dir))
    if not candidates:
        wanted = f"kernel {version}" if version else "a kernel with 9p"
        raise KernelError(f"no {wanted} under {boot}: apt-get install -y linux-image-amd64")
    return max(candidates, key=lambda k: _version_key(k.version))


def _is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def _try_xz(data: bytes) -> bytes | None:
    start = data.find(_XZ_MAGIC)
    if start < 0:
        return None
    try:
        raw = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    except lzma.LZMAError:
        return None
    return raw if _is_elf(raw) else None


def _try_lz4(data: bytes) -> bytes | None:
    if shutil.which("lz4") is None:
        return None
    start = data.find(_LZ4_MAGIC)
    while start >= 0:
        result = subprocess.run(["lz4", "-dc"], input=data[start:], capture_output=True)
        if _is_elf(result.stdout):
            return result.stdout
        start = data.find(_LZ4_MAGIC, start + 1)
    return None


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """Write the ELF kernel embedded in a bzImage (XZ, or LZ4 with the lz4 tool)."""
    data = vmlinuz.read_bytes()
    elf = _try_xz(data) or _try_lz4(data)
    if elf is None:
        raise KernelError(f"{vmlinuz}: no XZ/LZ4 ELF payload found")
    out.write_bytes(elf)


def module_paths(kernel: Kernel, names: tuple[str, ...] = GUEST_MODULES) -> list[Path]:
    """Module files for `names` and their dependencies, deduplicated, in load order."""
    ordered: list[Path] = []
    for name in names:
        result = subprocess.run(
            ["modprobe", "-S", kernel.version, "--show-depends", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise KernelError(f"modprobe cannot resolve {name}: {result.stderr.strip()}")
        for line in result.stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["insmod"] and Path(parts[1]) not in ordered:
                ordered.append(Path(parts[1]))
    return ordered


def install_module(source: Path, dest_dir: Path) -> str:
    """Copy (decompressing if needed) one module into dest_dir; return its .ko name."""
    name = source.name
    if name.endswith(".ko.xz"):
        name = name.removesuffix(".xz")
        (dest_dir / name).write_bytes(lzma.decompress(source.read_bytes()))
    elif name.endswith(".ko.zst"):
        name = name.removesuffix(".zst")
        with open(dest_dir / name, "wb") as out:
            subprocess.run(["zstd", "-qdc", str(source)], stdout=out, check=True)
    else:
        shutil.copyfile(source, dest_dir / name)
    return name
