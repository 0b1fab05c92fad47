"""The QEMU command line for one sandbox, from the `[hypervisor.qemu]` config table.

Direct kernel boot (PVH vmlinux + the loader initramfs and the shared read-only
root image, or the whole guest as an initramfs), no firmware, no default devices,
serial console to a log file, QMP on a unix socket, the agent channel as a
virtio-serial port (`agent.channel.0`) on a host unix socket, and the
sandbox's share directory as 9p (`kataShared`, security_model=none: owners
and modes pass through, so images keep working, symlinks included; the jail's
seccomp filter and QEMU's missing CAP_MKNOD/CAP_FSETID keep setuid/setgid
modes and device nodes from being made on the host — qemu/confine.py), or, with
`shared_fs = "virtio-fs"`, as a vhost-user-fs device (same tag) served by the
sandbox's virtiofsd (qemu/virtiofsd.py) on `<state>/virtiofsd.sock`; guest RAM
is then a shared memfd (the daemon maps it), and microvm's virtio-mmio
devices are modern (virtiofsd serves only modern virtio).
QEMU is confined (qemu/confine.py): seccomp sandbox, reduced capabilities.
With debug_console_enabled, a second port (`console.0`, host end
`<state>/console.sock`) for the guest's debug shell (kata_shim.debugconsole).
microvm needs MMIO devices and, under TCG, `tsc_early_khz` (the guest cannot
calibrate its TSC otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kata_shim.debugconsole import CONSOLE_PORT, CONSOLE_SOCKET, KERNEL_PARAM
from kata_shim.errors import InvalidArgument
from kata_shim.image.rootfs import loader_for
from kata_shim.sandbox.dial import AGENT_VSOCK_PORT
from kata_shim.sandbox.qemu import devices
from kata_shim.sandbox.qemu.confine import DEFAULT_SANDBOX, confine_prefix, sandbox_args
from kata_shim.sandbox.qemu.netdev import NicLike, netdev_args
from kata_shim.sandbox.qemu.virtiofsd import SOCKET_NAME, VirtiofsConfig
from kata_shim.sandbox.rootimage import DEFAULT_IMAGE, boot_files

__all__ = [
    "QemuConfig",
    "SandboxPaths",
    "VsockChannel",
    "build_command",
    "console_socket",
    "virtiofsd_socket",
]

SHARE_TAG = "kataShared"
SECURITY_MODEL = "none"
AGENT_PORT = "agent.channel.0"
SHARED_FS = ("virtio-9p", "virtio-fs", "none")
MEMORY_ID = "guest-ram"  # the shared memfd backend virtiofsd maps (virtio-fs only)


@dataclass(frozen=True, slots=True)
class QemuConfig:
    path: str = "/usr/bin/qemu-system-x86_64"
    kernel: str = "/var/lib/kata/vmlinux"
    initrd: str = ""  # the previous design: the whole guest in an initramfs
    image: str = DEFAULT_IMAGE  # the shared read-only root image (sandbox/rootimage.py)
    machine_type: str = "microvm"
    default_vcpus: int = 1
    default_memory: int = 512  # MiB
    kernel_params: str = ""
    accel: str = "auto"
    shared_fs: str = "virtio-9p"
    agent_channel: str = "auto"  # auto (vsock when /dev/vhost-vsock exists), vsock, virtio-serial
    enable_debug: bool = False
    debug_console_enabled: bool = False  # a guest shell on a second virtio-serial port
    seccompsandbox: str = DEFAULT_SANDBOX  # QEMU's -sandbox; "off" or "" for none
    rootless: bool = False
    # issue 17 (sandbox/qemu/devices.py): TCG translation cache, free page reporting
    tcg_tb_size_mb: int = 32
    enable_balloon_free_page_reporting: bool = True
    # Kata's key; True (our default, measured: docs/density.md): the root image on virtio-blk
    disable_image_nvdimm: bool = True
    virtio_fs: VirtiofsConfig = field(default_factory=VirtiofsConfig)  # virtio_fs_* keys

    def __post_init__(self) -> None:
        if self.image and self.initrd:  # image has a default: QemuConfig(initrd=x) needs image=""
            raise InvalidArgument(
                f"both image ({self.image}) and initrd ({self.initrd}) are set: keep one "
                '(with initrd, set image = "")'
            )

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> QemuConfig:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in table.items() if k in known}
        values["image"], values["initrd"] = boot_files(table)
        values["virtio_fs"] = VirtiofsConfig.from_table(table)
        if "default_vcpus" in values:  # a number in Kata's schema (e.g. 1.5): whole vCPUs here
            values["default_vcpus"] = math.ceil(values["default_vcpus"])
        config = cls(**values)
        if config.machine_type not in ("microvm", "pc", "q35"):
            raise InvalidArgument(f"machine_type {config.machine_type!r}: use microvm, pc or q35")
        if config.agent_channel not in ("auto", "vsock", "virtio-serial"):
            raise InvalidArgument(
                f"agent_channel {config.agent_channel!r}: use auto, vsock or virtio-serial"
            )
        if config.shared_fs not in SHARED_FS:
            raise InvalidArgument(
                f"shared_fs {config.shared_fs!r}: use virtio-9p, virtio-fs or none"
            )
        if config.rootless:
            raise InvalidArgument(
                "rootless = true is not supported: QEMU's 9p server must read and write "
                "container rootfs files of every owner; set rootless = false (QEMU runs as "
                "root with only the capabilities 9p needs and its seccomp sandbox on)"
            )
        if config.tcg_tb_size_mb < 0:
            raise InvalidArgument("tcg_tb_size_mb must be >= 0 (0: QEMU's own default)")
        if config.default_memory < 128 or config.default_vcpus < 1:
            raise InvalidArgument("default_memory must be >= 128 MiB and default_vcpus >= 1")
        return config


@dataclass(frozen=True, slots=True)
class SandboxPaths:
    qmp: Path
    agent: Path
    console: Path
    share: Path


@dataclass(frozen=True, slots=True)
class VsockChannel:
    """A claimed vhost-vsock guest CID and the open vhost fd QEMU inherits."""

    vhost_fd: int
    cid: int


def _agent_devices(mmio: bool, paths: SandboxPaths, vsock: VsockChannel | None) -> list[str]:
    if vsock is not None:
        device = "vhost-vsock-device" if mmio else "vhost-vsock-pci"
        return ["-device", f"{device},guest-cid={vsock.cid},vhostfd={vsock.vhost_fd}"]
    serial_bus = "virtio-serial-device" if mmio else "virtio-serial-pci"
    return [
        "-chardev",
        f"socket,id=agent,path={paths.agent},server=on,wait=off",
        "-device",
        serial_bus,
        "-device",
        f"virtserialport,chardev=agent,name={AGENT_PORT}",
    ]


def console_socket(paths: SandboxPaths) -> Path:
    """The debug console's host end, next to the QMP socket in the state dir."""
    return paths.qmp.with_name(CONSOLE_SOCKET)


def virtiofsd_socket(paths: SandboxPaths) -> Path:
    """virtiofsd's vhost-user socket, next to the QMP socket in the state dir."""
    return paths.qmp.with_name(SOCKET_NAME)


def _share_devices(config: QemuConfig, paths: SandboxPaths) -> list[str]:
    mmio = config.machine_type == "microvm"
    if config.shared_fs == "virtio-9p":
        nine_p = "virtio-9p-device" if mmio else "virtio-9p-pci"
        return [
            "-fsdev",
            f"local,id=share,path={paths.share},security_model={SECURITY_MODEL}",
            "-device",
            f"{nine_p},fsdev=share,mount_tag={SHARE_TAG}",
        ]
    if config.shared_fs == "virtio-fs":
        device = "vhost-user-fs-device" if mmio else "vhost-user-fs-pci"
        return [
            "-chardev",
            f"socket,id=virtiofs,path={virtiofsd_socket(paths)}",
            "-device",
            f"{device},chardev=virtiofs,tag={SHARE_TAG}",
        ]
    return []


def _console_devices(mmio: bool, paths: SandboxPaths, vsock: VsockChannel | None) -> list[str]:
    bus = ["-device", "virtio-serial-device" if mmio else "virtio-serial-pci"] if vsock else []
    return [
        "-chardev",
        f"socket,id=console,path={console_socket(paths)},server=on,wait=off",
        *bus,  # with virtio-serial for the agent, the port joins that bus
        "-device",
        f"virtserialport,chardev=console,name={CONSOLE_PORT}",
    ]


def _pmem_bytes(config: QemuConfig) -> int:
    if not devices.uses_pmem(config.machine_type, config.image, config.disable_image_nvdimm):
        return 0
    return devices.pmem_size(config.image)


def _devices(config: QemuConfig, paths: SandboxPaths, vsock: VsockChannel | None) -> list[str]:
    mmio = config.machine_type == "microvm"
    console = _console_devices(mmio, paths, vsock) if config.debug_console_enabled else []
    args = [
        *_agent_devices(mmio, paths, vsock),
        *console,
        "-device",
        "virtio-rng-device" if mmio else "virtio-rng-pci",
        *devices.balloon_args(mmio, config.enable_balloon_free_page_reporting),
        *devices.root_image_args(mmio, config.image, _pmem_bytes(config)),
        *_share_devices(config, paths),
    ]
    return args


def kernel_command_line(
    config: QemuConfig,
    accel: str,
    tsc_khz: int,
    *,
    vsock: bool = False,
    debug_console: bool = False,
) -> str:
    agent = f"vsock:{AGENT_VSOCK_PORT}" if vsock else f"vport:{AGENT_PORT}"
    params = ["console=ttyS0", "panic=-1", f"kata_shim.agent={agent}"]
    if debug_console:
        params.append(KERNEL_PARAM)
    if not config.enable_debug:
        params.append("quiet")
    if config.shared_fs in ("virtio-9p", "virtio-fs"):
        params.append(f"kata_shim.share={SHARE_TAG}")
    if config.shared_fs == "virtio-fs":
        params.append("kata_shim.share_fs=virtiofs")  # image/init.sh: mount -t virtiofs
    if config.machine_type == "microvm" and accel == "tcg":
        params.append(f"tsc_early_khz={tsc_khz}")
    if devices.uses_pmem(config.machine_type, config.image, config.disable_image_nvdimm):
        params.append("kata_shim.root=pmem")  # image/loader.sh: mount /dev/pmem0 with DAX
    return " ".join([*params, config.kernel_params]).strip()


def _shared_memory_args(config: QemuConfig) -> list[str]:
    """virtio-fs: guest RAM in a shared memfd (virtiofsd maps it); microvm's MMIO modern."""
    if config.shared_fs != "virtio-fs":
        return []
    memfd = f"memory-backend-memfd,id={MEMORY_ID},size={config.default_memory}M,share=on"
    modern = ["-global", "virtio-mmio.force-legacy=false"]
    return ["-object", memfd, *(modern if config.machine_type == "microvm" else [])]


def _machine_args(config: QemuConfig, accel: str) -> list[str]:
    cpu = ["-cpu", "host"] if accel == "kvm" else []  # TCG: QEMU's default model boots fastest
    machine = config.machine_type
    if config.shared_fs == "virtio-fs":
        machine += f",memory-backend={MEMORY_ID}"
    return [
        "-name",
        "kata-shim,debug-threads=on",
        "-accel",
        devices.accel_arg(accel, config.tcg_tb_size_mb),
        "-M",
        machine,
        *cpu,
        "-smp",
        str(config.default_vcpus),
        "-m",
        devices.memory_arg(config.default_memory, _pmem_bytes(config)),
        "-nodefaults",
        "-nographic",
        "-no-reboot",
        "-no-user-config",
        *_shared_memory_args(config),
    ]


def _monitor_args(paths: SandboxPaths) -> list[str]:
    return [
        "-serial",
        f"file:{paths.console}",
        "-qmp",
        f"unix:{paths.qmp},server=on,wait=off",
        "-qmp",  # a second monitor only for VM-death events (qemu/events.py)
        f"unix:{paths.qmp.with_name('qmp-events.sock')},server=on,wait=off",
    ]


def _boot_args(config: QemuConfig, accel: str, tsc_khz: int, vsock: bool) -> list[str]:
    cmdline = kernel_command_line(
        config, accel, tsc_khz, vsock=vsock, debug_console=config.debug_console_enabled
    )
    initrd = config.initrd or str(loader_for(config.image))
    return ["-kernel", config.kernel, "-initrd", initrd, "-append", cmdline]


def build_command(
    config: QemuConfig,
    paths: SandboxPaths,
    accel: str,
    tsc_khz: int,
    vsock: VsockChannel | None = None,
    nics: Sequence[NicLike] = (),  # pod network taps (qemu/netdev.py); fds passed by the caller
) -> list[str]:
    return [
        *confine_prefix(),
        config.path,
        *sandbox_args(config.seccompsandbox),
        *_machine_args(config, accel),
        *_monitor_args(paths),
        *_boot_args(config, accel, tsc_khz, vsock is not None),
        *_devices(config, paths, vsock),
        *netdev_args(nics, config.machine_type),
    ]
