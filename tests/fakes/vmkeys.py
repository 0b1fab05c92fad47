"""The `[hypervisor.qemu]` keys that boot the test guest image (tests/conftest.py builds it).

`image` is the default design (a shared read-only root image, issue 17); `initrd` the
initramfs design that `initrd = "..."` keeps working.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["vm_keys"]


def vm_keys(guest_image: Path, *, initrd: bool = False, accel: str = "auto") -> dict[str, str]:
    root = ("initrd", "kata-shim-initrd.img") if initrd else ("image", "kata-shim-rootfs.img")
    return {
        "kernel": str(guest_image / "vmlinux"),
        root[0]: str(guest_image / root[1]),
        "accel": accel,
    }
