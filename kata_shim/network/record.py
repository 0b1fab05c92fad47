"""A pod network's plumbing as JSON, so a restarted shim (or `delete`) can still undo it.

The record names the netns and, per endpoint, the CNI interface as it was before
plumbing (index, name, MAC, MTU, txqueuelen), the tap/macvtap and the model:
exactly what models.detach needs. Addresses and routes are not kept (teardown
does not touch them). Store `to_record(net)` in the sandbox's state directory
next to the VM's; `teardown_record(record)` is as idempotent as plumbing.teardown.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kata_shim.errors import InvalidArgument
from kata_shim.network import netlink
from kata_shim.network.discovery import NetInterface, NetnsState
from kata_shim.network.models import Endpoint, Model
from kata_shim.network.plumbing import PodNetwork, teardown

__all__ = ["from_record", "teardown_record", "to_record"]

VERSION = 1


def _link_json(link: netlink.Link) -> dict[str, Any]:
    return {
        "index": link.index,
        "name": link.name,
        "mac": link.mac,
        "mtu": link.mtu,
        "kind": link.kind,
        "flags": link.flags,
        "txqlen": link.txqlen,
    }


def to_record(net: PodNetwork) -> dict[str, Any]:
    return {
        "version": VERSION,
        "model": net.model.value,
        "netns": str(net.state.path) if net.state else "",
        "endpoints": [
            {"link": _link_json(e.interface.link), "tap": e.tap, "saved_mac": e.saved_mac}
            for e in net.endpoints
        ],
    }


def from_record(record: Mapping[str, Any]) -> PodNetwork:
    """The PodNetwork a record describes (no fds, no addresses or routes: for teardown)."""
    if record.get("version") != VERSION:
        raise InvalidArgument(f"pod network record version {record.get('version')!r} unknown")
    model = Model(record["model"])
    if not record.get("netns"):
        return PodNetwork(model)
    endpoints = []
    for entry in record["endpoints"]:
        iface = NetInterface(netlink.Link(**entry["link"]), ())
        endpoints.append(Endpoint(iface, model, entry["tap"], None, entry.get("saved_mac", "")))
    interfaces = tuple(e.interface for e in endpoints)
    return PodNetwork(model, NetnsState(Path(record["netns"]), interfaces, (), ()), endpoints)


def teardown_record(record: Mapping[str, Any]) -> None:
    teardown(from_record(record))
