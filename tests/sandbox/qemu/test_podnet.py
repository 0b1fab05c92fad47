"""QemuPodNetwork.log_unplugged: interfaces added to the pod netns after boot are named
(info) when a container joins, and nothing else happens."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from kata_shim.network import plumbing
from kata_shim.sandbox.qemu.podnet import QemuPodNetwork


def _podnet(tmp_path: Path, net: Any) -> QemuPodNetwork:
    pn = QemuPodNetwork("net2-sb", tmp_path, Path("/run/netns/net2-pod"), "tcfilter")
    pn._net = net
    return pn


def test_an_interface_added_after_boot_is_logged_as_not_hot_plugged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    net = object()
    seen: list[object] = []

    def unplugged(arg: object) -> list[str]:
        seen.append(arg)
        return ["eth1"]

    monkeypatch.setattr(plumbing, "unplugged", unplugged)
    with caplog.at_level(logging.INFO, logger="kata_shim.sandbox.qemu.podnet"):
        asyncio.run(_podnet(tmp_path, net).log_unplugged("net2-ctr"))
    assert seen == [net]
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "container net2-ctr joins; eth1 added to network namespace" in message, message
    assert "not hot-plugged" in message


def test_nothing_is_logged_when_every_interface_was_plugged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(plumbing, "unplugged", lambda net: [])
    with caplog.at_level(logging.DEBUG, logger="kata_shim.sandbox.qemu.podnet"):
        asyncio.run(_podnet(tmp_path, object()).log_unplugged("net2-ctr"))
    assert caplog.records == []


def test_a_vanished_netns_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unplugged(net: object) -> list[str]:
        raise FileNotFoundError("/run/netns/net2-pod")

    monkeypatch.setattr(plumbing, "unplugged", unplugged)
    with caplog.at_level(logging.INFO, logger="kata_shim.sandbox.qemu.podnet"):
        asyncio.run(_podnet(tmp_path, object()).log_unplugged("net2-ctr"))
    assert caplog.records == []


def test_no_pod_network_means_no_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unplugged(net: object) -> list[str]:
        raise AssertionError("looked up without a pod network")

    monkeypatch.setattr(plumbing, "unplugged", unplugged)
    asyncio.run(_podnet(tmp_path, None).log_unplugged("net2-ctr"))
