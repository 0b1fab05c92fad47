"""Which boot design a `[hypervisor.*]` table selects, and what is wrong with the root image.

Kata's rule: `image` (a root filesystem image) and `initrd` exclude each other.
The built-in default is the shared read-only root image `kata-shim image
build` writes (/var/lib/kata/kata-shim-rootfs.img, booted through the small
loader initramfs next to it); a table that sets only `initrd` boots the
previous design, the whole guest in an initramfs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kata_shim.errors import InvalidArgument
from kata_shim.image.rootfs import LOADER_NAME, ROOTFS_NAME, loader_for

__all__ = ["DEFAULT_IMAGE", "EROFS_MAGIC", "boot_files", "root_image_problem"]

DEFAULT_IMAGE = f"/var/lib/kata/{ROOTFS_NAME}"
EROFS_MAGIC = 0xE0F5E1E2  # little-endian at byte 1024 (the erofs superblock)


def boot_files(table: Mapping[str, Any]) -> tuple[str, str]:
    """(image, initrd) for this table: exactly one of them is non-empty."""
    image, initrd = str(table.get("image") or ""), str(table.get("initrd") or "")
    if image and initrd:
        raise InvalidArgument(
            f"both image ({image}) and initrd ({initrd}) are set: they exclude each other; "
            "keep image (the shared read-only root image) or initrd (the whole guest in RAM)"
        )
    return (image, initrd) if image or initrd else (DEFAULT_IMAGE, "")


def root_image_problem(image: str) -> tuple[str, str] | None:
    """(what is wrong, the fix) when `image` (or its loader) cannot boot, else None."""
    fix = f"run `kata-shim image build --out {os.path.dirname(image) or '.'}`, or set image"
    for what, path in (("image", image), ("loader initramfs", str(loader_for(image)))):
        if not os.path.exists(path):
            return f"{what} {path} does not exist", fix
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            return f"{what} {path} is not a readable file", fix
    try:
        with open(image, "rb") as handle:
            handle.seek(1024)
            magic = int.from_bytes(handle.read(4), "little")
    except OSError as exc:
        return f"{image} cannot be read: {exc.strerror}", fix
    if magic != EROFS_MAGIC:
        what = f"{image} is not an erofs root image (the loader {LOADER_NAME} mounts one)"
        return what, fix
    return None
