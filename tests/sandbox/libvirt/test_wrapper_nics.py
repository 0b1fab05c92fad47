"""The libvirt backend's NIC path without libvirtd: LibvirtSandbox._launch with a fake
libvirt connection whose createXML runs the real emulator wrapper as libvirt would (the
domain's `<qemu:env>` as its environment), with a stand-in "QEMU" that reports its argv
and where each of its fds points. Real taps (tests/sandbox/libvirt/test_nicpass.make_tap).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from kata_shim.config.schema import HypervisorConfig
from kata_shim.errors import Unavailable
from kata_shim.network.plumbing import Nic
from kata_shim.sandbox.base import SandboxSpec
from kata_shim.sandbox.libvirt import emulator
from kata_shim.sandbox.libvirt.backend import NICS_SOCKET, LibvirtSandbox
from kata_shim.sandbox.libvirt.domain import QEMU_NS
from tests.sandbox.libvirt.test_nicpass import MAC, make_tap

#: prints its argv, then `<fd> -> <target>` for each open fd, like QEMU would see them
FAKE_QEMU = """#!/bin/sh
echo "argv: $*"
for fd in /proc/$$/fd/*; do echo "${fd##*/} -> $(readlink "$fd")"; done
"""


class FakeNetwork:
    """QemuPodNetwork's shape for _launch: the nics, and whether the fds were dropped."""

    def __init__(self, nics: list[Nic]) -> None:
        self.nics = nics
        self.closed = False

    async def prepare(self) -> list[Nic]:
        return self.nics

    def close_fds(self) -> None:
        self.closed = True


class FakeConnection:
    """createXML runs the domain's `<emulator>` with its `<qemu:env>`, as libvirt does."""

    def __init__(self) -> None:
        self.output = ""
        self.xml = ""
        self.args = ["-name", "guest=x"]  # libvirt's QEMU arguments

    def createXML(self, xml: str, flags: int) -> object:
        import libvirt

        self.xml = xml
        root = ElementTree.fromstring(xml)
        wrapper = root.findtext("devices/emulator") or ""
        env = {e.get("name"): e.get("value") for e in root.iter(f"{{{QEMU_NS}}}env")}
        env = {str(k): str(v) for k, v in env.items()} | {"PATH": os.environ["PATH"]}
        done = subprocess.run(
            [wrapper, *self.args], env=env, capture_output=True, text=True, timeout=60
        )
        self.output = done.stdout + done.stderr
        if done.returncode != 0:
            raise libvirt.libvirtError(f"process exited while connecting to monitor: {done.stderr}")
        return object()


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="libvirtnet-wrapper-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _sandbox(work: Path, nics: list[Nic]) -> tuple[LibvirtSandbox, FakeNetwork, FakeConnection]:
    hypervisor = HypervisorConfig("libvirt", {"kernel": "/k", "initrd": "/i"})
    sandbox = LibvirtSandbox(SandboxSpec("libvirtnet-w", work / "state", hypervisor=hypervisor))
    sandbox.vm_dir.mkdir(parents=True)
    network = FakeNetwork(nics)
    sandbox.network = network  # type: ignore[assignment]
    sandbox._conn = FakeConnection()
    return sandbox, network, sandbox._conn


def _launch(work: Path, sandbox: LibvirtSandbox) -> None:
    import asyncio

    qemu = work / "qemu"
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(0o755)
    wrapper = emulator.install_wrapper(str(qemu), work / "emulators")
    asyncio.run(sandbox._launch("tcg", wrapper))


def test_qemu_gets_the_tap_as_a_virtio_nic_through_the_wrapper(work: Path) -> None:
    fd = make_tap("tap0_kata")
    try:
        sandbox, network, conn = _sandbox(work, [Nic(fd, MAC, 1500, "eth0", "tap0_kata")])
        _launch(work, sandbox)
        assert "<interface" not in conn.xml and "KATA_SHIM_NICS" in conn.xml
        argv = next(line for line in conn.output.splitlines() if line.startswith("argv: "))
        assert argv.startswith("argv: -name guest=x -netdev tap,id=net0,fd="), conn.output
        assert argv.endswith(f"-device virtio-net-pci,netdev=net0,mac={MAC}"), argv
        qemu_fd = argv.split("fd=")[1].split()[0]
        assert f"{qemu_fd} -> /dev/net/tun" in conn.output  # open in "QEMU", across exec
        assert network.closed and not (sandbox.vm_dir / NICS_SOCKET).exists()
    finally:
        os.close(fd)


def test_after_libvirts_json_devices_the_nic_is_a_json_device_too(work: Path) -> None:
    fd = make_tap("tap0_kata")
    try:
        sandbox, _, conn = _sandbox(work, [Nic(fd, MAC, 1500, "eth0", "tap0_kata")])
        conn.args = ["-device", '{"driver":"virtio-9p-pci","bus":"pci.0","addr":"0x2"}']
        _launch(work, sandbox)
        device = '{"driver": "virtio-net-pci", "netdev": "net0", "mac": "' + MAC + '"}'
        assert conn.output.splitlines()[0].endswith(f"-device {device}"), conn.output
    finally:
        os.close(fd)


def test_a_wrong_tap_stops_qemu_from_running_and_the_error_says_why(work: Path) -> None:
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        sandbox, network, conn = _sandbox(work, [Nic(fd, MAC, 1500, "eth0", "tap0_kata")])
        with pytest.raises(Unavailable, match="could not start domain kata-shim-libvirtnet-w"):
            _launch(work, sandbox)
        # what libvirt puts in its error and in the domain's QEMU log (the shim shows both)
        assert "kata-shim emulator: fd for tap0_kata is not a tap" in conn.output, conn.output
        assert "QEMU not started" in conn.output
        assert "argv:" not in conn.output  # the stand-in QEMU never ran
        assert network.closed and not (sandbox.vm_dir / NICS_SOCKET).exists()
    finally:
        os.close(fd)


def test_no_nics_means_no_handoff(work: Path) -> None:
    sandbox, _, conn = _sandbox(work, [])
    _launch(work, sandbox)
    assert "KATA_SHIM_NICS" not in conn.xml and "-netdev" not in conn.output
    assert not (sandbox.vm_dir / NICS_SOCKET).exists()
