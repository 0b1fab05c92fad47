"""QEMU arguments for a sandbox's memory and storage devices (issue 17).

* `accel_arg`: `tcg,tb-size=N` under TCG when `tcg_tb_size_mb` is set (QEMU's
  own default translation cache is 1 GiB of address space that fills up to
  ~100 MB per VM; see docs/density.md for the measured trade-off); KVM is
  passed through unchanged.
* `balloon_args`: virtio-balloon with `free-page-reporting=on`, so pages the
  guest frees (the unpacked boot image, exited containers) go back to the host.
* `root_image_args`: the shared read-only root image. With
  `disable_image_nvdimm = false` on pc/q35, as virtio-pmem: the file is mapped
  shared and read-only and the guest mounts it with DAX (measured: the guest
  then uses ~65 MB more RAM than with virtio-blk, so it is not the default).
  Otherwise (and always on microvm, whose guest has no PCI) as a virtio-blk
  disk: `readonly=on` (QEMU opens the file O_RDONLY, so the guest can never
  write it) and `cache.direct=on` (O_DIRECT: the host page cache keeps no
  second copy of blocks the guest already caches).
"""

from __future__ import annotations

import os

from kata_shim.errors import InvalidArgument

__all__ = [
    "PMEM_ALIGN",
    "ROOT_IMAGE_ID",
    "accel_arg",
    "balloon_args",
    "memory_arg",
    "pmem_size",
    "root_image_args",
    "uses_pmem",
]

ROOT_IMAGE_ID = "rootimg"
PMEM_ALIGN = 2 << 20


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


def uses_pmem(machine_type: str, image: str, disable_image_nvdimm: bool) -> bool:
    """virtio-pmem (DAX) for the root image: pc/q35 only (a microvm guest has no PCI)."""
    return bool(image) and machine_type in ("pc", "q35") and not disable_image_nvdimm


def pmem_size(image: str) -> int:
    """The root image's size: virtio-pmem maps it whole, in 2 MiB multiples."""
    size = os.path.getsize(image)
    if size % PMEM_ALIGN:
        raise InvalidArgument(
            f"image {image} is {size} bytes, not a multiple of 2 MiB, so virtio-pmem cannot map "
            "it: rebuild it with `kata-shim image build --force`, or set disable_image_nvdimm"
        )
    return size


def memory_arg(memory_mib: int, pmem_bytes: int) -> str:
    """`-m`: with a pmem device, room for it above RAM (one hotplug slot)."""
    if not pmem_bytes:
        return f"{memory_mib}M"
    return f"{memory_mib}M,slots=1,maxmem={memory_mib + (pmem_bytes >> 20)}M"


def root_pmem_args(image: str, size: int) -> list[str]:
    """The image as virtio-pmem: QEMU opens it read-only and maps it shared, so every
    VM's guest reads (DAX) the host's one page-cache copy."""
    backend = (
        f"memory-backend-file,id={ROOT_IMAGE_ID},mem-path={_escape(image)},size={size},"
        "share=on,readonly=on"
    )
    return ["-object", backend, "-device", f"virtio-pmem-pci,memdev={ROOT_IMAGE_ID},id=rootpmem"]


def root_image_args(mmio: bool, image: str, pmem_bytes: int = 0) -> list[str]:
    if not image:
        return []
    if pmem_bytes:
        return root_pmem_args(image, pmem_bytes)
    device = "virtio-blk-device" if mmio else "virtio-blk-pci"
    drive = (
        f"file={_escape(image)},if=none,id={ROOT_IMAGE_ID},format=raw,readonly=on,"
        "cache.direct=on,aio=threads"
    )
    return ["-drive", drive, "-device", f"{device},drive={ROOT_IMAGE_ID}"]


def _escape(value: str) -> str:
    """QEMU option values: a comma is written as two commas."""
    return value.replace(",", ",,")
