"""The guest image: contents, reproducibility, and up-to-date detection."""

from __future__ import annotations

import json
import subprocess

import pytest

from kata_shim.image import builder, kernel, rootfs
from kata_shim.sandbox.rootimage import EROFS_MAGIC

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_manifest_describes_the_built_files(guest_image) -> None:
    manifest = json.loads((guest_image / "manifest.json").read_text())
    for key in ("kernel", "initrd"):
        entry = manifest[key]
        assert builder.sha256_file(builder.Path(entry["path"])) == entry["sha256"]
    assert "9p.ko" in manifest["modules"] and "vsock_loopback.ko" in manifest["modules"]
    assert manifest["components"]["python"].startswith("3.11")
    elf = (guest_image / f"vmlinux-{manifest['kernel']['version']}").read_bytes()[:4]
    assert elf == b"\x7fELF"


def test_initrd_holds_what_the_guest_needs(guest_image) -> None:
    with open(guest_image / "kata-shim-initrd.img", "rb") as image:
        listing = subprocess.run(
            ["cpio", "-t", "--quiet"], stdin=image, capture_output=True, text=True, check=True
        ).stdout.split()
    for needed in (
        "init",
        "bin/busybox",
        "usr/bin/python3",
        "usr/bin/runc",
        "opt/kata-shim/lib/kata_shim/native/selftest.py",
        "opt/kata-shim/lib/google/protobuf/__init__.py",
        "usr/lib/python3.11/runpy.pyc",
        "opt/kata-shim/lib/kata_shim/guest/__pycache__/main.cpython-311.pyc",  # no compiling
        "opt/kata-shim/lib/google/protobuf/__pycache__/message.cpython-311.pyc",
        "lib64/ld-linux-x86-64.so.2",
    ):
        assert needed in listing, needed
    modules = [n for n in listing if n.startswith("lib/modules/")]
    assert len(modules) >= 10
    tls = [n for n in listing if n.rsplit("/", 1)[-1].startswith(("ssl.", "_ssl."))]
    assert not tls  # pytree.GUEST_LEAVES_OUT: asyncio runs without it


def test_root_image_and_loader(guest_image) -> None:
    manifest = json.loads((guest_image / "manifest.json").read_text())
    for key in ("rootfs", "loader"):
        assert builder.sha256_file(builder.Path(manifest[key]["path"])) == manifest[key]["sha256"]
    with open(guest_image / rootfs.ROOTFS_NAME, "rb") as image:
        image.seek(1024)
        assert int.from_bytes(image.read(4), "little") == EROFS_MAGIC
    with open(guest_image / rootfs.LOADER_NAME, "rb") as loader:
        listing = subprocess.run(
            ["cpio", "-t", "--quiet"], stdin=loader, capture_output=True, text=True, check=True
        ).stdout.split()
    for needed in ("init", "bin/busybox", "lib/modules/erofs.ko", "lib/modules/virtio_blk.ko"):
        assert needed in listing, needed
    assert manifest["loader"]["size"] < 8 << 20  # QEMU keeps a copy per VM: keep it small


def test_second_build_is_skipped(guest_image) -> None:
    messages: list[str] = []
    builder.build(guest_image, progress=messages.append)
    assert any("up to date" in m for m in messages)


def test_forced_rebuilds_are_byte_identical(tmp_path) -> None:
    first = builder.build(tmp_path / "a", force=True, progress=lambda m: None)
    second = builder.build(tmp_path / "b", force=True, progress=lambda m: None)
    for key in ("kernel", "initrd", "rootfs", "loader"):
        assert first[key]["sha256"] == second[key]["sha256"]


def test_module_order_loads_dependencies_first() -> None:
    paths = [p.name for p in kernel.module_paths(kernel.find_kernel())]
    assert paths.index("virtio.ko") < paths.index("virtio_console.ko")
    assert paths.index("vsock.ko") < paths.index("vsock_loopback.ko")
    assert paths.index("9pnet.ko") < paths.index("9p.ko")
    assert paths.index("failover.ko") < paths.index("net_failover.ko")
    assert paths.index("net_failover.ko") < paths.index("virtio_net.ko")
