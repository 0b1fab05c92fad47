"""nicpass: the shim hands tap fds to libvirt's emulator wrapper, which checks them.

Real taps, each in a private network namespace that a worker thread unshares (it
vanishes with the tap's last fd: nothing to clean up), and the real socket path.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import fcntl
import json
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

from kata_shim.network.models import IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUNSETIFF
from kata_shim.network.netns import CLONE_NEWNET
from kata_shim.sandbox.libvirt import emulator, nicpass
from kata_shim.sandbox.libvirt.domain import DomainSpec, domain_xml
from kata_shim.sandbox.libvirt.nicpass import HandoffError, NicHandoff, parse_env

MAC = "0a:58:0a:16:00:05"
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass(frozen=True)
class TapNic:
    fd: int
    mac: str
    tap: str


def make_tap(name: str) -> int:
    """A tap `name` opened as kata_shim.network opens one, in a fresh netns of its own
    (both gone when the fd is closed)."""
    result: list[int] = []

    def worker() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        fcntl.ioctl(
            fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        )
        result.append(fd)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert result, "could not make a tap (needs root and /dev/net/tun)"
    return result[0]


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="libvirtnet-nicpass-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _handoff(
    sock: Path, sent: list[TapNic], wanted: list[TapNic], qemu_args: tuple[str, ...] = ()
) -> list[str]:
    """Serve `sent` from the shim's end; the wrapper's end expects `wanted`."""
    handoff = NicHandoff(sock, "pc", sent)
    raw = nicpass.env_value(sock, "pc", wanted)

    async def main() -> list[str]:
        serving = asyncio.ensure_future(handoff.serve(10))
        try:
            return await asyncio.to_thread(nicpass.receive, parse_env(raw), qemu_args)
        finally:
            await asyncio.wait([serving])

    try:
        return asyncio.run(main())
    finally:
        handoff.close()


def test_the_wrapper_gets_the_taps_as_qemu_arguments(work: Path) -> None:
    fds = [make_tap("tap0_kata"), make_tap("tap1_kata")]
    nics = [TapNic(fds[0], MAC, "tap0_kata"), TapNic(fds[1], "0a:58:0a:17:00:05", "tap1_kata")]
    try:
        args = _handoff(work / "nics.sock", nics, nics)
        got = [int(a.split("fd=")[1]) for a in args if a.startswith("tap,")]
        assert args == [
            "-netdev", f"tap,id=net0,fd={got[0]}",
            "-device", f"virtio-net-pci,netdev=net0,mac={MAC}",
            "-netdev", f"tap,id=net1,fd={got[1]}",
            "-device", "virtio-net-pci,netdev=net1,mac=0a:58:0a:17:00:05",
        ]  # fmt: skip
        for fd, name in zip(got, ("tap0_kata", "tap1_kata"), strict=True):
            assert nicpass.tap_identity(fd)[0] == name
            assert nicpass.tap_identity(fd)[1] & IFF_TAP
            assert os.get_inheritable(fd)  # QEMU inherits it across exec
            os.close(fd)
        assert not (work / "nics.sock").exists()  # close() removed it
    finally:
        for fd in fds:
            os.close(fd)


def test_json_devices_when_libvirt_writes_json_devices(work: Path) -> None:
    """QEMU creates keyval -devices before JSON ones: a keyval NIC would take the PCI slot
    that libvirt's JSON 9p device names (seen: "slot 2 function 0 not available")."""
    fd = make_tap("tap0_kata")
    libvirt = ("-device", '{"driver":"virtio-9p-pci","id":"fs0","bus":"pci.0","addr":"0x2"}')
    try:
        args = _handoff(
            work / "nics.sock",
            [TapNic(fd, MAC, "tap0_kata")],
            [TapNic(fd, MAC, "tap0_kata")],
            libvirt,
        )
        got = int(args[1].split("fd=")[1])
        os.close(got)
        assert args[0] == "-netdev" and args[2] == "-device"
        assert json.loads(args[3]) == {"driver": "virtio-net-pci", "netdev": "net0", "mac": MAC}
    finally:
        os.close(fd)


def test_a_tap_other_than_the_one_expected_is_refused(work: Path) -> None:
    fd = make_tap("tap0_kata")
    try:
        with pytest.raises(HandoffError, match="fd for tap7_kata is 'tap0_kata'"):
            _handoff(
                work / "nics.sock", [TapNic(fd, MAC, "tap0_kata")], [TapNic(fd, MAC, "tap7_kata")]
            )
    finally:
        os.close(fd)


def test_an_fd_that_is_no_tap_is_refused(work: Path) -> None:
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        nics = [TapNic(fd, MAC, "tap0_kata")]
        with pytest.raises(HandoffError, match="fd for tap0_kata is not a tap"):
            _handoff(work / "nics.sock", nics, nics)
    finally:
        os.close(fd)


def test_a_count_other_than_expected_is_refused(work: Path) -> None:
    fd = make_tap("tap0_kata")
    try:
        one = TapNic(fd, MAC, "tap0_kata")
        with pytest.raises(HandoffError, match="the shim sent 1 fds for 2 NICs"):
            _handoff(work / "nics.sock", [one], [one, TapNic(fd, MAC, "tap1_kata")])
    finally:
        os.close(fd)


def test_no_shim_to_ask_fails_closed(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = nicpass.env_value(work / "absent.sock", "pc", [TapNic(0, MAC, "tap0_kata")])
    monkeypatch.setenv(nicpass.NICS_ENV, raw)
    with pytest.raises(SystemExit) as exited:
        emulator.main(["/usr/bin/qemu-system-x86_64", "-S"])
    message = str(exited.value.code)
    assert "cannot receive the pod's NICs from the shim" in message
    assert str(work / "absent.sock") in message and "QEMU not started" in message


@pytest.mark.parametrize(
    "raw",
    [
        '{"socket": "/s", "machine": "pc"}',
        '{"socket": "s", "machine": "pc", "nics": [{"tap": "t", "mac": "m"}]}',
        "[1",
    ],
)
def test_a_malformed_request_is_refused(raw: str) -> None:
    with pytest.raises(HandoffError, match=nicpass.NICS_ENV):
        parse_env(raw)


def test_the_domain_has_no_interface_and_names_the_handoff_in_qemu_env() -> None:
    raw = nicpass.env_value(Path("/s/vm/nics.sock"), "pc", [TapNic(5, MAC, "tap0_kata")])
    spec = DomainSpec(
        "kata-shim-x", "/w", "/k", "/i", "console=ttyS0", 512, 1, "qemu", "pc",
        Path("/s/vm/console.log"), Path("/s/vm/agent.sock"), None,
        jail_options=("--guard-socket", "/s/vm/owner-guard.sock"),
        wrapper_env=((nicpass.NICS_ENV, raw),),
    )  # fmt: skip
    root = ElementTree.fromstring(domain_xml(spec))
    assert root.find("devices/interface") is None
    ns = {"qemu": "http://libvirt.org/schemas/domain/qemu/1.0"}
    env = {e.get("name"): e.get("value") for e in root.findall("qemu:commandline/qemu:env", ns)}
    assert parse_env(env[nicpass.NICS_ENV]).nics == (nicpass.WantedNic("tap0_kata", MAC),)
    assert env[emulator.JAIL_ENV] == '["--guard-socket", "/s/vm/owner-guard.sock"]'
