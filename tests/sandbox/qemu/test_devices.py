"""Issue 17's QEMU arguments: TCG translation cache, free page reporting, the root image."""

from __future__ import annotations

from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.sandbox.qemu import devices
from kata_shim.sandbox.qemu.cmdline import QemuConfig, SandboxPaths, build_command
from kata_shim.sandbox.rootimage import DEFAULT_IMAGE

PATHS = SandboxPaths(
    Path("/s/qmp.sock"), Path("/s/agent.sock"), Path("/s/console.log"), Path("/s/shared")
)


def _argv(table: dict[str, object], accel: str = "tcg") -> list[str]:
    return build_command(QemuConfig.from_table(table), PATHS, accel, 2596124)


def test_tb_size_only_under_tcg() -> None:
    tcg = _argv({"tcg_tb_size_mb": 48})
    assert tcg[tcg.index("-accel") + 1] == "tcg,tb-size=48"
    kvm = _argv({"tcg_tb_size_mb": 48}, "kvm")
    assert kvm[kvm.index("-accel") + 1] == "kvm"
    default = _argv({"tcg_tb_size_mb": 0})
    assert default[default.index("-accel") + 1] == "tcg"  # 0: QEMU's own default
    with pytest.raises(errors.InvalidArgument, match="tcg_tb_size_mb"):
        QemuConfig.from_table({"tcg_tb_size_mb": -1})


@pytest.mark.parametrize(
    ("machine", "device"), [("microvm", "virtio-balloon-device"), ("q35", "virtio-balloon-pci")]
)
def test_balloon_reports_free_pages_by_default(machine: str, device: str) -> None:
    argv = _argv({"machine_type": machine})
    assert f"{device},free-page-reporting=on" in argv
    off = _argv({"machine_type": machine, "enable_balloon_free_page_reporting": False})
    assert not any("balloon" in arg for arg in off)


def test_root_image_is_the_default_and_attached_read_only_without_host_cache() -> None:
    argv = _argv({})
    assert argv[argv.index("-initrd") + 1] == "/var/lib/kata/kata-shim-loader.img"
    drive = argv[argv.index("-drive") + 1]
    assert drive.startswith(f"file={DEFAULT_IMAGE},")
    assert "readonly=on" in drive and "cache.direct=on" in drive and "format=raw" in drive
    assert f"virtio-blk-device,drive={devices.ROOT_IMAGE_ID}" in argv


def test_initrd_alone_keeps_the_previous_design() -> None:
    argv = _argv({"initrd": "/img/kata-shim-initrd.img", "machine_type": "pc"})
    assert argv[argv.index("-initrd") + 1] == "/img/kata-shim-initrd.img"
    assert "-drive" not in argv


def test_image_path_commas_are_escaped_and_pci_on_pc() -> None:
    argv = _argv({"image": "/a,b/root.img", "machine_type": "pc"})
    assert argv[argv.index("-drive") + 1].startswith("file=/a,,b/root.img,")
    assert f"virtio-blk-pci,drive={devices.ROOT_IMAGE_ID}" in argv
    assert argv[argv.index("-initrd") + 1] == "/a,b/kata-shim-loader.img"


def test_pmem_on_pc_when_nvdimm_is_enabled(tmp_path: Path) -> None:
    image = tmp_path / "root.img"
    image.write_bytes(b"\0" * (4 << 20))
    table = {"image": str(image), "machine_type": "q35", "disable_image_nvdimm": False}
    argv = _argv(table)
    backend = argv[argv.index("-object") + 1]
    assert backend.startswith("memory-backend-file,") and f"mem-path={image}," in backend
    assert "share=on,readonly=on" in backend and f"size={4 << 20}" in backend
    assert f"virtio-pmem-pci,memdev={devices.ROOT_IMAGE_ID},id=rootpmem" in argv
    assert argv[argv.index("-m", argv.index("-smp")) + 1] == "512M,slots=1,maxmem=516M"
    assert "kata_shim.root=pmem" in argv[argv.index("-append") + 1] and "-drive" not in argv
    microvm = _argv({**table, "machine_type": "microvm"})  # no PCI in a microvm guest
    assert "-drive" in microvm and "kata_shim.root=pmem" not in " ".join(microvm)
    image.write_bytes(b"\0" * 4097)
    with pytest.raises(errors.InvalidArgument, match="2 MiB"):
        _argv(table)


def test_virtio_blk_is_the_default_on_pc(tmp_path: Path) -> None:
    argv = _argv({"image": "/img/root.img", "machine_type": "pc"})
    assert "-drive" in argv and "virtio-pmem-pci" not in " ".join(argv)
