"""Domain XML for a sandbox VM under libvirt.

Direct kernel boot with `<acpi/>` (without it the guest's poweroff only halts
and the domain stays running), destroy on poweroff/reboot/crash, the serial
console to a file, the agent channel as a virtio-serial port bound to a unix
socket, and the share directory as 9p. QEMU runs with a static DAC label of
root (as our direct QEMU backend does): as libvirt's default libvirt-qemu user
it could only use accessmode='squash', under which runc in the guest cannot
prepare a container rootfs it does not own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from kata_shim.sandbox.libvirt import devices

__all__ = ["DomainSpec", "domain_xml"]


@dataclass(frozen=True, slots=True)
class DomainSpec:
    name: str
    emulator: str
    kernel: str
    initrd: str
    cmdline: str
    memory_mib: int
    vcpus: int
    domain_type: str  # "qemu" (TCG) or "kvm"
    machine: str
    console: Path
    agent_socket: Path
    share: Path | None
    image: str = ""  # the shared read-only root image (issue 17; libvirt/devices.py)
    tb_size_mb: int = 0
    free_page_reporting: bool = False


def _share_xml(share: Path | None) -> str:
    if share is None:
        return ""
    return (
        "    <filesystem type='mount' accessmode='passthrough'>\n"
        f"      <source dir={quoteattr(str(share))}/>\n"
        "      <target dir='kataShared'/>\n"
        "    </filesystem>\n"
    )


def _devices_xml(spec: DomainSpec) -> str:
    return f"""  <devices>
    <emulator>{escape(spec.emulator)}</emulator>
    <serial type='file'>
      <source path={quoteattr(str(spec.console))}/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind' path={quoteattr(str(spec.agent_socket))}/>
      <target type='virtio' name='agent.channel.0'/>
    </channel>
{_share_xml(spec.share)}{devices.root_disk(spec.image)}    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <controller type='usb' model='none'/>
{devices.balloon(spec.free_page_reporting)}  </devices>
"""


def domain_xml(spec: DomainSpec) -> str:
    return f"""<domain type={quoteattr(spec.domain_type)}>
  <name>{escape(spec.name)}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine={quoteattr(spec.machine)}>hvm</type>
    <kernel>{escape(spec.kernel)}</kernel>
    <initrd>{escape(spec.initrd)}</initrd>
    <cmdline>{escape(spec.cmdline)}</cmdline>
  </os>
  <features>
    <acpi/>
{devices.tcg_features(spec.domain_type, spec.tb_size_mb)}  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
{_devices_xml(spec)}</domain>
"""
