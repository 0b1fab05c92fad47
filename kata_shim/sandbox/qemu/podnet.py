"""The QEMU (and libvirt) sandbox's pod network: plumbed before QEMU starts, undone at cleanup.

The pod netns (sandbox/base.py PodNetworkRequest) is joined to taps by
kata_shim.network (docs/networking.md); QEMU gets them as virtio-net NICs
(qemu/netdev.py). kata_shim.network is imported only when a sandbox has a netns
(pyroute2's import cost), and its blocking netlink work runs in a thread. The
plumbing is recorded in `<state_dir>/network.json` before QEMU starts, so
`kata-shim delete` can undo it after the shim died (shim/delete.py).
Teardown is idempotent and also right after QEMU was SIGKILLed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kata_shim.agent.client import AgentClient
    from kata_shim.network.plumbing import Nic, PodNetwork

__all__ = ["RECORD", "QemuPodNetwork"]

log = logging.getLogger(__name__)

RECORD = "network.json"


class QemuPodNetwork:
    """One sandbox's pod network: prepare → nics → close_fds → configure_guest → teardown."""

    def __init__(self, sandbox_id: str, state_dir: Path, netns: Path, model: str) -> None:
        self.sandbox_id = sandbox_id
        self.record_path = state_dir / RECORD
        self.netns = netns
        self.model = model
        self._net: PodNetwork | None = None

    async def prepare(self) -> list[Nic]:
        """Discover the netns and join each interface to a tap (all or nothing)."""
        self._net = await asyncio.to_thread(self._prepare)
        nics = self._net.nics()
        log.info(
            "sandbox %s: network namespace %s (%s): %s",
            self.sandbox_id,
            self.netns,
            self.model,
            ", ".join(f"{n.name} {n.mac} mtu {n.mtu}" for n in nics) or "no interfaces",
        )
        return nics

    def _prepare(self) -> PodNetwork:
        from kata_shim.network import plumbing, record

        spec = {"linux": {"namespaces": [{"type": "network", "path": str(self.netns)}]}}
        net = plumbing.prepare(spec, self.model)
        try:
            saved = {**record.to_record(net), "interfaces": net.describe()}  # for `sandboxes`
            _write_record(self.record_path, saved)
        except BaseException:
            plumbing.teardown(net)
            raise
        return net

    def close_fds(self) -> None:
        """Once QEMU holds the taps: this process's copies go."""
        if self._net is not None:
            self._net.close_fds()

    async def configure_guest(self, agent: AgentClient) -> None:
        if self._net is None:
            return
        from kata_shim.network import plumbing

        await plumbing.configure_guest(agent, self._net)
        log.debug("sandbox %s: guest network configured", self.sandbox_id)

    async def log_unplugged(self, container_id: str) -> None:
        """When a container joins: name the interfaces added to the netns after boot.
        They are not hot-plugged into the VM (as in Kata); this only says so (info)."""
        net = self._net
        if net is None:
            return
        from kata_shim.network import plumbing

        try:
            names = await asyncio.to_thread(plumbing.unplugged, net)
        except Exception as exc:  # a notice only: the netns may be going away
            log.debug("sandbox %s: cannot list %s: %s", self.sandbox_id, self.netns, exc)
            return
        if names:
            log.info(
                "sandbox %s: container %s joins; %s added to network namespace %s after the "
                "sandbox started: not hot-plugged, the VM does not see it",
                self.sandbox_id,
                container_id,
                ", ".join(names),
                self.netns,
            )

    def describe(self) -> list[dict[str, Any]]:
        return self._net.describe() if self._net is not None else []

    async def teardown(self) -> None:
        """Leave the netns as CNI made it (idempotent)."""
        net = self._net
        if net is None:
            return
        from kata_shim.network import plumbing

        await asyncio.to_thread(plumbing.teardown, net)
        self.record_path.unlink(missing_ok=True)
        log.debug("sandbox %s: network namespace %s restored", self.sandbox_id, self.netns)


def _write_record(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
