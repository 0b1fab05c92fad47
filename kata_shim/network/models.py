"""Internetworking models: how one pod-netns interface is joined to one VM NIC.

tcfilter (Kata's default): a tap `tap<N>_kata` in the pod netns, opened on
/dev/net/tun by this process (not persistent: it disappears with the last fd,
i.e. with QEMU), and ingress qdiscs with a u32 match-all filter and a mirred
egress redirect on both the CNI interface and the tap.
macvtap: a macvtap `mt<N><rand>_kata` on the CNI interface carrying the
interface's MAC (the CNI interface gets a random one meanwhile); its /dev/tapX
node is made privately from sysfs (no udev here) and opened.
none: nothing is joined.

Every function here runs inside the pod netns (network.netns) with one
netlink socket; `attach` either succeeds or leaves the netns as it found it,
and `detach` is idempotent (a tap already gone with a SIGKILLed QEMU is fine).
"""

from __future__ import annotations

import enum
import fcntl
import os
import secrets
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kata_shim.errors import FailedPrecondition, InvalidArgument
from kata_shim.network import netlink
from kata_shim.network.discovery import NetInterface

__all__ = ["BRIDGEABLE", "Endpoint", "Model", "attach", "detach", "parse_model"]

BRIDGEABLE = {"veth": "virtual", "macvlan": "macvlan", "ipvlan": "ipvlan"}  # kind -> Kata type
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
SYS_CHAR = Path("/sys/dev/char")


class Model(enum.Enum):
    TCFILTER = "tcfilter"
    MACVTAP = "macvtap"
    NONE = "none"


def parse_model(text: str) -> Model:
    """The `[runtime] internetworking_model` value ("" means the default, tcfilter)."""
    try:
        return Model(text or "tcfilter")
    except ValueError:
        choices = ", ".join(m.value for m in Model)
        raise InvalidArgument(
            f"internetworking_model {text!r} is not supported: use one of {choices}"
        ) from None


@dataclass(slots=True)
class Endpoint:
    """One CNI interface joined to one VM NIC."""

    interface: NetInterface
    model: Model
    tap: str  # the tap / macvtap link in the pod netns
    fd: int | None  # the tap's fd for QEMU (`-netdev tap,fd=`); None once closed
    saved_mac: str = ""  # macvtap: the interface's own MAC, restored by detach

    @property
    def mac(self) -> str:
        """The guest NIC's MAC: the CNI interface's (what the bridge expects to see)."""
        return self.interface.link.mac

    def close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _check_bridgeable(iface: NetInterface, model: Model) -> None:
    kind = iface.link.kind
    if kind not in BRIDGEABLE or (model is Model.MACVTAP and kind == "ipvlan"):
        what = f"a {kind!r} link" if kind else "a physical device"
        raise FailedPrecondition(
            f"interface {iface.name} is {what}; the {model.value} model can only carry veth, "
            "macvlan or ipvlan interfaces into the VM (use a CNI plugin that makes a veth, "
            'e.g. bridge or ptp, or set internetworking_model = "none")'
        )


def _open_tap(name: str, iface: NetInterface) -> int:
    fd = -1
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        ifr = struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        raise FailedPrecondition(
            f"cannot create tap {name} for interface {iface.name}: {exc.strerror} "
            "(needs /dev/net/tun and CAP_NET_ADMIN; is a link of that name already there?)"
        ) from None
    return fd


def _attach_tcfilter(nl: netlink.Netlink, iface: NetInterface, n: int) -> Endpoint:
    if nl.has_ingress_qdisc(iface.link.index):
        raise FailedPrecondition(
            f"interface {iface.name} already has an ingress qdisc; the tcfilter model needs "
            'its own (remove it, or use internetworking_model = "macvtap")'
        )
    name = f"tap{n}_kata"
    endpoint = Endpoint(iface, Model.TCFILTER, name, _open_tap(name, iface))
    try:
        tap = nl.link(name)
        if tap is None:
            raise FailedPrecondition(f"tap {name} vanished right after its creation")
        nl.set_link(tap.index, mtu=iface.link.mtu, up=True)
        nl.redirect_ingress(iface.link.index, tap.index)
        nl.redirect_ingress(tap.index, iface.link.index)
    except BaseException:
        detach(nl, endpoint)
        raise
    return endpoint


def _char_device(name: str, index: int) -> int:
    """The dev_t of macvtap `name`: /sys/dev/char/M:m -> .../net/<name>/macvtap/tap<index>."""
    suffix = f"/net/{name}/macvtap/tap{index}"
    for entry in SYS_CHAR.iterdir():
        if os.readlink(entry).endswith(suffix):
            major, minor = entry.name.split(":")
            return os.makedev(int(major), int(minor))
    raise FailedPrecondition(f"macvtap {name} has no character device in {SYS_CHAR}")


def _open_macvtap(name: str, index: int) -> int:
    with tempfile.TemporaryDirectory(prefix="kata-shim-macvtap-") as scratch:
        node = Path(scratch, "tap")
        os.mknod(node, stat.S_IFCHR | 0o600, _char_device(name, index))
        return os.open(node, os.O_RDWR | os.O_CLOEXEC)  # vnet_hdr is on by default


def _attach_macvtap(nl: netlink.Netlink, iface: NetInterface, n: int) -> Endpoint:
    name = f"mt{n}{secrets.token_hex(2)}_kata"
    endpoint = Endpoint(iface, Model.MACVTAP, name, None, saved_mac=iface.link.mac)
    try:
        nl.set_mac(iface.link.index, _random_mac())
        index = nl.add_macvtap(name, iface.link.index, iface.link.mac, iface.link.mtu)
        nl.set_link(index, up=True)
        endpoint.fd = _open_macvtap(name, index)
    except BaseException:
        detach(nl, endpoint)
        raise
    return endpoint


def _random_mac() -> str:
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in raw)


def attach(nl: netlink.Netlink, iface: NetInterface, n: int, model: Model) -> Endpoint:
    """Join interface number `n` to a tap per `model` (not Model.NONE)."""
    _check_bridgeable(iface, model)
    if model is Model.MACVTAP:
        return _attach_macvtap(nl, iface, n)
    return _attach_tcfilter(nl, iface, n)


def detach(nl: netlink.Netlink, endpoint: Endpoint) -> None:
    """Undo `attach`: idempotent, and fine when QEMU (and with it the tap) is already gone."""
    endpoint.close_fd()
    link = endpoint.interface.link
    if endpoint.model is Model.TCFILTER and nl.delete_ingress(link.index):
        nl.set_link(link.index, txqlen=link.txqlen)  # a qdisc turns a txqueuelen of 0 into 1000
    nl.delete_link(endpoint.tap)
    if endpoint.saved_mac:
        nl.set_mac(link.index, endpoint.saved_mac)
