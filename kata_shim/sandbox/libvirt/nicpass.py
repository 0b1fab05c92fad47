"""The pod's tap fds, handed from the shim to the emulator wrapper that libvirt starts.

libvirt cannot open a tap that lives in the pod netns (`<interface type='ethernet'>`
opens it by name in libvirtd's own netns), so the domain XML has no `<interface>`:
the shim opens the taps (kata_shim.network, as for the QEMU backend) and passes
them over a unix socket to the wrapper (emulator.py), which appends one
`-netdev tap,fd=N` + virtio-net device per tap to QEMU's argv (qemu/netdev.py;
the device in JSON when libvirt writes its devices so, see `receive`) before it
execs QEMU. libvirt never sees the NICs.

* The shim listens on `<state>/vm/nics.sock` (0600, in the root-only state dir)
  and names it, with what the wrapper must receive (tap names, MACs, the machine
  type), in the domain's `<qemu:env>` `NICS_ENV` (JSON). It accepts one root peer
  and sends all tap fds in one SCM_RIGHTS message.
* The wrapper fails closed (exits, so QEMU never runs and createXML fails with
  the message in QEMU's log): socket unreachable, a peer other than root, a count
  other than expected, or an fd that is not the expected tap (TUNGETIFF name and
  IFF_TAP; a macvtap answers TUNGETIFF too).
* vhost-net is not used: libvirt's QEMU runs in a private /dev without
  /dev/vhost-net (passing a vhost fd as well is not done).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import socket
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kata_shim.errors import Unavailable
from kata_shim.sandbox.qemu.netdev import NicLike, netdev_args
from kata_shim.sandbox.rootsock import listen_private, peer_uid

__all__ = [
    "NICS_ENV",
    "HandoffError",
    "NicHandoff",
    "NicRequest",
    "ReceivedNic",
    "TapNic",
    "WantedNic",
    "env_value",
    "json_devices",
    "parse_env",
    "receive",
    "tap_identity",
]

#: the `<qemu:env>` variable: {"socket": path, "machine": type, "nics": [{"tap", "mac"}]}
NICS_ENV = "KATA_SHIM_NICS"
TUNGETIFF = 0x800454D2  # _IOR('T', 210, unsigned int)
IFREQ_SIZE = 40
IFF_TAP = 0x0002
MESSAGE = b"kata-shim-nics"


class HandoffError(Exception):
    """The wrapper could not get the NICs it was told to expect (it must not run QEMU)."""


@dataclass(frozen=True, slots=True)
class WantedNic:
    tap: str  # the tap (or macvtap) link in the pod netns
    mac: str  # the guest NIC's MAC: the CNI interface's


@dataclass(frozen=True, slots=True)
class ReceivedNic:
    fd: int
    mac: str


class TapNic(NicLike, Protocol):
    """kata_shim.network.plumbing.Nic: an fd, the guest MAC and the tap's name."""

    @property
    def tap(self) -> str: ...


def env_value(sock: Path, machine: str, nics: Sequence[TapNic]) -> str:
    """NICS_ENV's value: what the wrapper must receive for `nics`."""
    wanted = [{"tap": n.tap, "mac": n.mac} for n in nics]
    return json.dumps({"socket": str(sock), "machine": machine, "nics": wanted})


class NicHandoff:
    """The shim's end: listen, then give the tap fds to the first root peer."""

    def __init__(self, path: Path, machine: str, nics: Sequence[TapNic]) -> None:
        """The fds of `nics` stay the caller's (close them once QEMU runs)."""
        self.path = path
        self.fds = [n.fd for n in nics]
        self.env = {NICS_ENV: env_value(path, machine, nics)}
        self._server = listen_private(path)

    async def serve(self, timeout: float) -> None:
        """Send the fds to the wrapper; Unavailable when none connects in `timeout`."""
        loop = asyncio.get_running_loop()
        self._server.setblocking(False)
        try:
            conn, _ = await asyncio.wait_for(loop.sock_accept(self._server), timeout)
        except TimeoutError:
            raise Unavailable(
                f"libvirt's QEMU wrapper did not fetch the pod's NICs from {self.path} "
                f"in {timeout:g}s"
            ) from None
        with conn:
            uid = peer_uid(conn)
            if uid != 0:
                raise Unavailable(f"{self.path} was reached by uid {uid}, not libvirt's QEMU")
            conn.setblocking(True)
            await asyncio.to_thread(socket.send_fds, conn, [MESSAGE], self.fds)

    def close(self) -> None:
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# --- the wrapper's end ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NicRequest:
    socket: str
    machine: str
    nics: tuple[WantedNic, ...]


def parse_env(raw: str) -> NicRequest:
    """NICS_ENV's value, checked (HandoffError naming what is wrong)."""
    try:
        data = json.loads(raw)
        nics = tuple(WantedNic(str(n["tap"]), str(n["mac"])) for n in data["nics"])
        request = NicRequest(str(data["socket"]), str(data["machine"]), nics)
    except (ValueError, KeyError, TypeError) as exc:
        raise HandoffError(f"{NICS_ENV} is not what the shim writes ({exc}): {raw!r}") from None
    if not request.nics or not os.path.isabs(request.socket):
        raise HandoffError(f"{NICS_ENV} names no NIC or a relative socket: {raw!r}")
    return request


def tap_identity(fd: int) -> tuple[str, int]:
    """(interface name, TUN flags) of a tun/tap/macvtap fd (OSError if it is none)."""
    if not stat.S_ISCHR(os.fstat(fd).st_mode):
        raise OSError(0, "not a character device")
    ifr = fcntl.ioctl(fd, TUNGETIFF, bytes(IFREQ_SIZE))
    name = ifr[:16].split(b"\0", 1)[0].decode(errors="replace")
    (flags,) = struct.unpack_from("H", ifr, 16)
    return name, int(flags)


def _check(fds: list[int], wanted: Sequence[WantedNic]) -> list[ReceivedNic]:
    if len(fds) != len(wanted):
        raise HandoffError(f"the shim sent {len(fds)} fds for {len(wanted)} NICs")
    received = []
    for fd, nic in zip(fds, wanted, strict=True):
        try:
            name, flags = tap_identity(fd)
        except OSError as exc:
            raise HandoffError(f"fd for {nic.tap} is not a tap ({exc.strerror or exc})") from None
        if name != nic.tap or not flags & IFF_TAP:
            raise HandoffError(f"fd for {nic.tap} is {name!r} (flags {flags:#x}), not that tap")
        os.set_inheritable(fd, True)  # for QEMU, across the jail's exec
        received.append(ReceivedNic(fd, nic.mac))
    return received


def _fetch(path: str, count: int) -> list[int]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        try:
            sock.connect(path)
            if peer_uid(sock) != 0:
                raise HandoffError(f"{path} is not served by root (the shim)")
            msg, fds, flags, _ = socket.recv_fds(sock, 64, count + 1, socket.MSG_CMSG_CLOEXEC)
        except OSError as exc:
            raise HandoffError(
                f"cannot receive the pod's NICs from the shim at {path} ({exc})"
            ) from None
    if msg != MESSAGE or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise HandoffError(f"unexpected message from {path}: {msg!r} ({len(fds)} fds)")
    return fds


def json_devices(args: list[str]) -> list[str]:
    """`-device driver,k=v,...` as `-device {"driver": ..., "k": "v"}` (QEMU >= 6.2)."""
    out: list[str] = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag == "-device":
            driver, *props = value.split(",")
            value = json.dumps({"driver": driver, **dict(p.split("=", 1) for p in props)})
        out += [flag, value]
    return out


def _uses_json_devices(qemu_args: Sequence[str]) -> bool:
    return any(
        flag == "-device" and value.startswith("{") for flag, value in itertools.pairwise(qemu_args)
    )


def receive(request: NicRequest, qemu_args: Sequence[str]) -> list[str]:
    """Fetch and check the taps; the `-netdev`/`-device` arguments to append to
    `qemu_args` (libvirt's). QEMU creates every keyval `-device` before any JSON one, so
    when libvirt writes JSON devices with explicit PCI addresses, ours are JSON too (and
    created last, in a slot left free); otherwise keyval, after libvirt's."""
    fds = _fetch(request.socket, len(request.nics))
    try:
        nics = _check(fds, request.nics)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    args = netdev_args(nics, request.machine, vhost=False)
    return json_devices(args) if _uses_json_devices(qemu_args) else args
