"""Domain XML for a sandbox VM under libvirt.

Direct kernel boot with `<acpi/>` (without it the guest's poweroff only halts
and the domain stays running), destroy on poweroff/reboot/crash, the serial
console to a file, the agent channel (and, with debug_console_enabled, the
debug console's `console.0`) as virtio-serial ports bound to unix sockets,
and the share directory as 9p.
QEMU runs with a static DAC label of root (as our direct QEMU backend does):
as libvirt's default libvirt-qemu user it could only use accessmode='squash',
under which runc in the guest cannot prepare a container rootfs it does not
own. `accessmode='passthrough'` with a root server is safe only because of
what confines it (docs/security.md): `<emulator>` is our jail wrapper
(emulator.py: no setuid/setgid mode, no device node through 9p), libvirt
clears QEMU's capabilities and adds its `-sandbox`, and the share's host
mounts are `ro`/`nosuid,nodev`. Extra jail options for this domain go in
`<qemu:env>` (emulator.JAIL_ENV), and so does what the wrapper must fetch for
the pod's NICs (nicpass.NICS_ENV): the domain has no `<interface>`, the taps
reach QEMU through the wrapper.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from kata_shim.debugconsole import CONSOLE_PORT
from kata_shim.sandbox.libvirt import devices
from kata_shim.sandbox.libvirt.emulator import JAIL_ENV

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
    console_socket: Path | None = None  # the debug console's host end (debug_console_enabled)
    jail_options: tuple[str, ...] = ()  # for the emulator wrapper's jail (emulator.JAIL_ENV)
    wrapper_env: tuple[tuple[str, str], ...] = ()  # more `<qemu:env>` (nicpass.NICS_ENV)


def _share_xml(share: Path | None) -> str:
    if share is None:
        return ""
    return (
        "    <filesystem type='mount' accessmode='passthrough'>\n"
        f"      <source dir={quoteattr(str(share))}/>\n"
        "      <target dir='kataShared'/>\n"
        "    </filesystem>\n"
    )


def _channel_xml(path: Path, name: str) -> str:
    return (
        "    <channel type='unix'>\n"
        f"      <source mode='bind' path={quoteattr(str(path))}/>\n"
        f"      <target type='virtio' name={quoteattr(name)}/>\n"
        "    </channel>\n"
    )


QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
AGENT_CHANNEL = "agent.channel.0"


def _wrapper_env(spec: DomainSpec) -> list[tuple[str, str]]:
    env = [(JAIL_ENV, json.dumps(list(spec.jail_options)))] if spec.jail_options else []
    return env + list(spec.wrapper_env)


def _qemu_env_xml(env: list[tuple[str, str]]) -> str:
    if not env:
        return ""
    lines = "".join(
        f"    <qemu:env name={quoteattr(name)} value={quoteattr(value)}/>\n" for name, value in env
    )
    return f"  <qemu:commandline>\n{lines}  </qemu:commandline>\n"


def _devices_xml(spec: DomainSpec) -> str:
    channels = _channel_xml(spec.agent_socket, AGENT_CHANNEL)
    if spec.console_socket is not None:
        channels += _channel_xml(spec.console_socket, CONSOLE_PORT)
    return f"""  <devices>
    <emulator>{escape(spec.emulator)}</emulator>
    <serial type='file'>
      <source path={quoteattr(str(spec.console))}/>
      <target port='0'/>
    </serial>
{channels}{_share_xml(spec.share)}{devices.root_disk(spec.image)}    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <controller type='usb' model='none'/>
{devices.balloon(spec.free_page_reporting)}  </devices>
"""


def domain_xml(spec: DomainSpec) -> str:
    env = _wrapper_env(spec)
    namespace = f" xmlns:qemu={quoteattr(QEMU_NS)}" if env else ""
    return f"""<domain type={quoteattr(spec.domain_type)}{namespace}>
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
{_devices_xml(spec)}{_qemu_env_xml(env)}</domain>
"""
