"""QEMU arguments for a sandbox's memory and storage devices (issue 17).

* `accel_arg`: `tcg,tb-size=N` under TCG when `tcg_tb_size_mb` is set (QEMU's
  own default translation cache is 1 GiB of address space that fills up to
  ~100 MB per VM; see docs/density.md for the measured trade-off); KVM is
  passed through unchanged.
* `balloon_args`: virtio-balloon with `free-page-reporting=on`, so pages the
  guest frees (the unpacked boot image, exited containers) go back to the host.
* `root_image_args`: the shared read-only root image as a virtio-blk disk:
  `readonly=on` (QEMU opens the file O_RDONLY, so the guest can never write
  it) and `cache.direct=on` (O_DIRECT: the host page cache keeps no second
  copy of blocks the guest already caches).
"""

from __future__ import annotations

__all__ = ["ROOT_IMAGE_ID", "accel_arg", "balloon_args", "root_image_args"]

ROOT_IMAGE_ID = "rootimg"


def accel_arg(accel: str, tb_size_mb: int) -> str:
    """The `-accel` value: TCG gets the translation cache size, KVM is unchanged."""
    if accel == "tcg" and tb_size_mb > 0:
        return f"tcg,tb-size={tb_size_mb}"
    return accel


def balloon_args(mmio: bool, free_page_reporting: bool) -> list[str]:
    if not free_page_reporting:
        return []
    device = "virtio-balloon-device" if mmio else "virtio-balloon-pci"
    return ["-device", f"{device},free-page-reporting=on"]


def root_image_args(mmio: bool, image: str) -> list[str]:
    if not image:
        return []
    device = "virtio-blk-device" if mmio else "virtio-blk-pci"
    drive = (
        f"file={_escape(image)},if=none,id={ROOT_IMAGE_ID},format=raw,readonly=on,"
        "cache.direct=on,aio=threads"
    )
    return ["-drive", drive, "-device", f"{device},drive={ROOT_IMAGE_ID}"]


def _escape(value: str) -> str:
    """QEMU option values: a comma is written as two commas."""
    return value.replace(",", ",,")
