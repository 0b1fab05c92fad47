"""The shared read-only root image and the small loader initramfs that mounts it.

`write_rootfs(tree, target)` packs the guest tree (what the initramfs holds)
into an uncompressed erofs image with `mkfs.erofs` (Debian/openEuler
`erofs-utils`): fixed timestamps, UUID and ownership, no host xattrs, so the
same tree gives the same bytes; padded to 2 MiB for virtio-pmem. Every VM
attaches that one file read-only (sandbox/qemu/devices.py); the host keeps
one copy of it, not one per VM.

`write_loader(modules, target)` writes a tiny newc initramfs: static busybox,
the modules needed to reach the image (virtio transports, virtio_blk, erofs,
overlay) and loader.sh as /init, which mounts the image on /dev/vda with a
tmpfs overlay and switch_roots to the image's own /init.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from kata_shim.image import cpio, kernel

__all__ = [
    "LOADER_MODULES",
    "LOADER_NAME",
    "MKFS_EROFS",
    "ROOTFS_NAME",
    "loader_for",
    "write_loader",
    "write_rootfs",
]

ROOTFS_NAME = "kata-shim-rootfs.img"
LOADER_NAME = "kata-shim-loader.img"
LOADER_MODULES = (
    "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_pmem", "nd_pmem", "erofs", "overlay",
)  # fmt: skip
MKFS_EROFS = "mkfs.erofs"
PMEM_ALIGN = 2 << 20
_UUID = "6b617461-7368-696d-2d72-6f6f74667300"  # fixed: reproducible images


def loader_for(image: str | Path) -> Path:
    """The loader initramfs `kata-shim image build` writes next to a root image."""
    return Path(image).parent / LOADER_NAME


def write_rootfs(tree: Path, target: Path) -> None:
    """Pack `tree` into an erofs image at `target` (atomically)."""
    if shutil.which(MKFS_EROFS) is None:
        raise RuntimeError(
            f"{MKFS_EROFS} not found: apt-get install erofs-utils (dnf install erofs-utils)"
        )
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    argv = [MKFS_EROFS, "--quiet", "-T0", f"-U{_UUID}", "--all-root", "-x-1"]
    result = subprocess.run([*argv, str(partial), str(tree)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{MKFS_EROFS} failed: {result.stderr.strip()[-500:]}")
    size = partial.stat().st_size  # virtio-pmem maps whole 2 MiB blocks
    os.truncate(partial, -(-size // PMEM_ALIGN) * PMEM_ALIGN)
    partial.replace(target)


def _loader_tree(tree: Path, modules: list[Path], busybox: Path) -> None:
    for sub in ("bin", "proc", "dev", "lower", "upper", "newroot", "lib/modules"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, tree / "bin/busybox")
    (tree / "bin/busybox").chmod(0o755)
    (tree / "bin/sh").symlink_to("busybox")
    names = [kernel.install_module(path, tree / "lib/modules") for path in modules]
    (tree / "modules.order").write_text("".join(f"{n}\n" for n in names))
    init = tree / "init"
    init.write_text(resources.files("kata_shim.image").joinpath("loader.sh").read_text())
    init.chmod(0o755)


def write_loader(modules: list[Path], busybox: Path, scratch: Path, target: Path) -> None:
    """The loader initramfs (newc cpio) at `target`, built in `scratch`."""
    tree = scratch / "loader"
    _loader_tree(tree, modules, busybox)
    partial = target.with_suffix(".partial")
    with open(partial, "wb") as out:
        cpio.write_newc(tree, out)
    partial.replace(target)
