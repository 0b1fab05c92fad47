"""QEMU command line and accelerator choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.sandbox.qemu.accel import choose_accel
from kata_shim.sandbox.qemu.cmdline import QemuConfig, SandboxPaths, build_command

PATHS = SandboxPaths(
    Path("/s/qmp.sock"), Path("/s/agent.sock"), Path("/s/console.log"), Path("/s/shared")
)


def test_microvm_tcg_command() -> None:
    argv = build_command(QemuConfig(), PATHS, "tcg", 2596124)
    joined = " ".join(argv)
    assert argv[argv.index("--", 4) + 1] == "/usr/bin/qemu-system-x86_64"
    assert "-accel tcg,tb-size=32 -M microvm" in joined and "-cpu" not in argv
    assert "virtserialport,chardev=agent,name=agent.channel.0" in joined
    assert "socket,id=agent,path=/s/agent.sock,server=on,wait=off" in joined
    assert "virtio-9p-device,fsdev=share,mount_tag=kataShared" in joined
    append = argv[argv.index("-append") + 1]
    assert "tsc_early_khz=2596124" in append and "kata_shim.agent=vport:agent.channel.0" in append
    assert "kata_shim.share=kataShared" in append and "quiet" in append


def test_pc_kvm_uses_pci_devices_and_host_cpu() -> None:
    config = QemuConfig.from_table(
        {
            "machine_type": "q35",
            "default_memory": 1024,
            "default_vcpus": 2,
            "enable_debug": True,
            "kernel_params": "foo=1",
        }
    )
    argv = build_command(config, PATHS, "kvm", 1)
    joined = " ".join(argv)
    assert "-M q35" in joined and "-cpu host" in joined and "-smp 2 -m 1024M" in joined
    assert "virtio-serial-pci" in joined and "virtio-9p-pci" in joined
    append = argv[argv.index("-append") + 1]
    assert "tsc_early_khz" not in append and "quiet" not in append and append.endswith("foo=1")


@pytest.mark.parametrize(
    "table",
    [
        {"machine_type": "virt"},
        {"shared_fs": "virtio-fs-nydus"},
        {"default_memory": 64},
        {"shared_fs": "virtio-fs", "virtio_fs_cache": "sometimes"},
        {"shared_fs": "virtio-fs", "virtio_fs_extra_args": "--thread-pool-size=1"},
    ],
)
def test_bad_config_is_rejected(table) -> None:
    with pytest.raises(errors.InvalidArgument):
        QemuConfig.from_table(table)


def test_accel_choice(tmp_path) -> None:
    dev = tmp_path / "kvm"
    modules = tmp_path / "module"
    modules.mkdir()
    assert choose_accel("auto", dev, modules) == "tcg"  # no /dev/kvm
    dev.write_text("")
    assert choose_accel("auto", dev, modules) == "kvm"
    (modules / "kvm_pvm").mkdir()
    assert choose_accel("auto", dev, modules) == "tcg"  # PVM host
    assert choose_accel("kvm", dev, modules) == "kvm"
    with pytest.raises(errors.InvalidArgument):
        choose_accel("hvf", dev, modules)


def test_this_host_falls_back_to_tcg() -> None:
    assert choose_accel("auto") == "tcg"


def test_image_and_initrd_together_are_refused_and_fractional_vcpus_round_up() -> None:
    with pytest.raises(errors.InvalidArgument, match="exclude each other"):
        QemuConfig.from_table({"image": "/var/lib/kata/a.img", "initrd": "/var/lib/kata/b.img"})
    assert QemuConfig.from_table({"default_vcpus": 1.5}).default_vcpus == 2


def test_a_second_qmp_monitor_carries_the_death_events() -> None:
    argv = build_command(QemuConfig(), PATHS, "tcg", 2_000_000)
    monitors = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-qmp"]
    assert monitors == [
        "unix:/s/qmp.sock,server=on,wait=off",
        "unix:/s/qmp-events.sock,server=on,wait=off",
    ]
    assert "-no-reboot" in argv and "panic=-1" in argv[argv.index("-append") + 1]


def test_qemu_is_confined_by_default() -> None:
    argv = build_command(QemuConfig(), PATHS, "tcg", 1)
    assert argv[1:4] == ["-m", "kata_shim.sandbox.qemu.jail", "--"]
    assert argv[4].endswith("/setpriv")
    prefix = argv[4 : argv.index("--", 4)]
    assert "--bounding-set=-all,+chown,+dac_override,+dac_read_search,+fowner" in prefix
    assert "--inh-caps=-all" in prefix and "--no-new-privs" in prefix
    sandbox = argv[argv.index("-sandbox") + 1]
    assert sandbox == "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    fsdev = argv[argv.index("-fsdev") + 1]
    assert fsdev == "local,id=share,path=/s/shared,security_model=none"


@pytest.mark.parametrize("value", ["off", ""])
def test_seccompsandbox_off_leaves_the_sandbox_out(value: str) -> None:
    argv = build_command(QemuConfig.from_table({"seccompsandbox": value}), PATHS, "tcg", 1)
    assert "-sandbox" not in argv


def test_seccompsandbox_is_passed_as_configured() -> None:
    config = QemuConfig.from_table({"seccompsandbox": "on,spawn=deny"})
    argv = build_command(config, PATHS, "tcg", 1)
    assert argv[argv.index("-sandbox") + 1] == "on,spawn=deny"


def test_rootless_is_refused_with_the_reason() -> None:
    with pytest.raises(errors.InvalidArgument, match="rootless = true is not supported: QEMU's 9p"):
        QemuConfig.from_table({"rootless": True})


def test_a_config_with_both_image_and_initrd_is_refused() -> None:
    with pytest.raises(errors.InvalidArgument, match="keep one"):
        QemuConfig(initrd="/x/initrd.img")  # image keeps its default
    assert QemuConfig(initrd="/x/initrd.img", image="").initrd == "/x/initrd.img"


def test_virtio_fs_on_microvm_shares_guest_ram_with_virtiofsd() -> None:
    config = QemuConfig.from_table({"shared_fs": "virtio-fs", "default_memory": 256})
    argv = build_command(config, PATHS, "tcg", 2596124)
    joined = " ".join(argv)
    assert "-M microvm,memory-backend=guest-ram" in joined
    assert "-object memory-backend-memfd,id=guest-ram,size=256M,share=on" in joined
    assert "-global virtio-mmio.force-legacy=false" in joined  # virtiofsd: modern virtio only
    assert "-chardev socket,id=virtiofs,path=/s/virtiofsd.sock " in joined
    assert "-device vhost-user-fs-device,chardev=virtiofs,tag=kataShared" in joined
    assert "9p" not in joined
    append = argv[argv.index("-append") + 1]
    assert "kata_shim.share=kataShared" in append and "kata_shim.share_fs=virtiofs" in append


def test_virtio_fs_on_q35_uses_pci_and_keeps_mmio_legacy_untouched() -> None:
    config = QemuConfig.from_table({"shared_fs": "virtio-fs", "machine_type": "q35"})
    joined = " ".join(build_command(config, PATHS, "kvm", 1))
    assert "vhost-user-fs-pci,chardev=virtiofs,tag=kataShared" in joined
    assert "-M q35,memory-backend=guest-ram" in joined and "force-legacy" not in joined


def test_nine_p_keeps_private_guest_ram() -> None:
    joined = " ".join(build_command(QemuConfig(), PATHS, "tcg", 1))
    assert "memory-backend" not in joined and "vhost-user" not in joined
