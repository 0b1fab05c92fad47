"""QEMU arguments for the pod's NICs: one `-netdev tap,fd=N` + virtio-net device per tap.

The taps come from kata_shim.network (opened inside the pod netns); QEMU inherits
their fds (the caller passes `nic_fds(nics)` to the child). The guest NIC's MAC is
the CNI interface's, so the pod network sees the addresses it expects.
virtio-net-device (MMIO) on microvm, virtio-net-pci otherwise; vhost-net only when
/dev/vhost-net exists (these test machines have none: userspace virtio-net).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["NicLike", "netdev_args", "nic_fds"]

VHOST_NET = Path("/dev/vhost-net")


class NicLike(Protocol):
    """kata_shim.network.plumbing.Nic, or anything shaped like it."""

    @property
    def fd(self) -> int: ...

    @property
    def mac(self) -> str: ...


def netdev_args(
    nics: Sequence[NicLike], machine_type: str, *, vhost: bool | None = None
) -> list[str]:
    use_vhost = VHOST_NET.exists() if vhost is None else vhost
    device = "virtio-net-device" if machine_type == "microvm" else "virtio-net-pci"
    args: list[str] = []
    for n, nic in enumerate(nics):
        netdev = f"tap,id=net{n},fd={nic.fd}" + (",vhost=on" if use_vhost else "")
        args += ["-netdev", netdev, "-device", f"{device},netdev=net{n},mac={nic.mac}"]
    return args


def nic_fds(nics: Sequence[NicLike]) -> tuple[int, ...]:
    return tuple(nic.fd for nic in nics)
