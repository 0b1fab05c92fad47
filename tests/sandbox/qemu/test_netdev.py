"""kata_shim.sandbox.qemu.netdev: -netdev tap,fd= + virtio-net per NIC, MMIO on microvm."""

from __future__ import annotations

from pathlib import Path

from kata_shim.network.plumbing import Nic
from kata_shim.sandbox.qemu.cmdline import QemuConfig, SandboxPaths, build_command
from kata_shim.sandbox.qemu.netdev import netdev_args, nic_fds

NICS = [Nic(7, "0a:58:0a:00:00:05", 1500, "eth0"), Nic(9, "0a:58:0a:01:00:05", 1400, "eth1")]


def test_microvm_gets_mmio_devices_pc_gets_pci() -> None:
    assert netdev_args(NICS, "microvm", vhost=False) == [
        "-netdev", "tap,id=net0,fd=7",
        "-device", "virtio-net-device,netdev=net0,mac=0a:58:0a:00:00:05",
        "-netdev", "tap,id=net1,fd=9",
        "-device", "virtio-net-device,netdev=net1,mac=0a:58:0a:01:00:05",
    ]  # fmt: skip
    assert netdev_args(NICS[:1], "q35", vhost=True) == [
        "-netdev", "tap,id=net0,fd=7,vhost=on",
        "-device", "virtio-net-pci,netdev=net0,mac=0a:58:0a:00:00:05",
    ]  # fmt: skip
    assert netdev_args([], "microvm") == []
    assert nic_fds(NICS) == (7, 9)


def test_build_command_appends_the_nics(tmp_path: Path) -> None:
    paths = SandboxPaths(tmp_path / "q", tmp_path / "a", tmp_path / "c", tmp_path / "s")
    plain = build_command(QemuConfig(), paths, "tcg", 1000)
    with_nics = build_command(QemuConfig(), paths, "tcg", 1000, nics=NICS)
    assert with_nics[: len(plain)] == plain
    assert with_nics[len(plain) :] == netdev_args(NICS, "microvm")
