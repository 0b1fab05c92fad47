"""kata_shim.network.plumbing + models in a test-owned CNI netns: plumb, carry traffic, undo.

"Undo" means the pod netns is byte-for-byte what CNI made (`ip -d link`, addresses,
qdiscs, ingress filters), also when the tap vanished first (QEMU SIGKILLed) and when
prepare failed half-way.
"""

from __future__ import annotations

import json
import os
import select
import struct
from pathlib import Path

import pytest

from kata_shim.errors import FailedPrecondition, InvalidArgument
from kata_shim.network import plumbing, record
from kata_shim.network.models import Model, parse_model
from tests.network.conftest import Pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

VNET_HDR = bytes(10)  # struct virtio_net_hdr, all zero: no offloads


def test_parse_model() -> None:
    assert parse_model("") is Model.TCFILTER
    assert parse_model("macvtap") is Model.MACVTAP
    with pytest.raises(InvalidArgument, match="use one of tcfilter, macvtap, none"):
        parse_model("bridged")


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def _ip4(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def _arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    eth = b"\xff" * 6 + _mac(src_mac) + b"\x08\x06"
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
    arp += _mac(src_mac) + _ip4(src_ip) + bytes(6) + _ip4(target_ip)
    return eth + arp


def _read_frames(fd: int, want: bytes, timeout: float = 10.0) -> bytes:
    """Frames from the tap fd until one contains `want`."""
    os.set_blocking(fd, False)
    seen = b""
    while select.select([fd], [], [], timeout)[0]:
        frame = os.read(fd, 65536)[len(VNET_HDR) :]
        seen += frame
        if want in frame:
            return frame
    raise AssertionError(f"no frame with {want.hex()} on the tap; saw {seen.hex()}")


@pytest.mark.parametrize("model", ["tcfilter", "macvtap"])
def test_traffic_flows_both_ways_through_the_tap(pod: Pod, model: str) -> None:
    before = pod.snapshot()
    net = plumbing.prepare(pod.spec, model)
    try:
        [nic] = net.nics()
        assert nic.mac == pod.eth0.mac and nic.name == "eth0" and nic.mtu == 1500
        assert net.describe()[0]["addresses"] == pod.eth0.ips
        gateway = pod.host.network(0).gateway
        pod_ip = pod.eth0.ips[0].split("/")[0]
        # guest -> bridge: an ARP request for the gateway written into the tap; the
        # bridge's answer (bridge -> guest) must come back out of the tap.
        os.write(nic.fd, VNET_HDR + _arp_request(nic.mac, pod_ip, gateway))
        reply = _read_frames(nic.fd, _mac(nic.mac) + _ip4(pod_ip))
        assert reply[12:14] == b"\x08\x06" and reply[20:22] == b"\x00\x02"  # ARP reply
    finally:
        plumbing.teardown(net)
    assert pod.snapshot() == before
    plumbing.teardown(net)  # idempotent
    assert pod.snapshot() == before


def test_tcfilter_plumbing_and_teardown_after_the_tap_vanished(pod: Pod) -> None:
    before = pod.snapshot()
    net = plumbing.prepare(pod.spec)
    assert "tap0_kata" in pod.sh("ip", "-o", "link")
    filters = pod.sh("tc", "filter", "show", "dev", "eth0", "ingress")
    assert "mirred (Egress Redirect to device tap0_kata)" in filters
    assert "protocol all" in filters and "match 00000000/00000000 at 0" in filters
    assert "Redirect to device eth0" in pod.sh(
        "tc", "filter", "show", "dev", "tap0_kata", "ingress"
    )
    net.close_fds()  # as when QEMU (the last holder) is SIGKILLed: the tap goes away
    assert "tap0_kata" not in pod.sh("ip", "-o", "link")
    assert pod.snapshot() != before  # eth0's ingress qdisc and filter are still there
    plumbing.teardown(net)
    assert pod.snapshot() == before


def test_model_none_and_no_netns_plumb_nothing(pod: Pod) -> None:
    before = pod.snapshot()
    net = plumbing.prepare(pod.spec, "none")
    assert net.nics() == [] and net.state is None
    assert plumbing.prepare({"linux": {"namespaces": [{"type": "network"}]}}).nics() == []
    plumbing.teardown(net)
    assert pod.snapshot() == before


def test_missing_netns_fails_create(tmp_path: Path) -> None:
    spec = {"linux": {"namespaces": [{"type": "network", "path": str(tmp_path / "nope")}]}}
    with pytest.raises(InvalidArgument, match="nope does not exist"):
        plumbing.prepare(spec)


def test_the_hosts_own_netns_is_refused() -> None:
    spec = {"linux": {"namespaces": [{"type": "network", "path": "/proc/self/ns/net"}]}}
    with pytest.raises(InvalidArgument, match="is the shim's own"):
        plumbing.prepare(spec)


def test_unbridgeable_interface_is_named_and_nothing_is_left(pod: Pod) -> None:
    pod.sh("ip", "link", "add", "zbr0", "type", "bridge")  # sorts after eth0: eth0 is done first
    before = pod.snapshot()
    with pytest.raises(FailedPrecondition, match=r"interface zbr0 is a 'bridge' link.*veth"):
        plumbing.prepare(pod.spec)
    assert pod.snapshot() == before


def test_tap_creation_failure_is_named_and_nothing_is_left(pod: Pod) -> None:
    pod.sh("ip", "tuntap", "add", "tap0_kata", "mode", "tun")  # the name the tap needs
    before = pod.snapshot()
    with pytest.raises(FailedPrecondition, match="cannot create tap tap0_kata for interface eth0"):
        plumbing.prepare(pod.spec)
    assert pod.snapshot() == before


def test_existing_ingress_qdisc_is_refused(pod: Pod) -> None:
    pod.sh("tc", "qdisc", "add", "dev", "eth0", "ingress")
    before = pod.snapshot()
    with pytest.raises(FailedPrecondition, match="eth0 already has an ingress qdisc"):
        plumbing.prepare(pod.spec)
    assert pod.snapshot() == before


def test_interfaces_added_after_prepare_are_reported_not_plugged(pod: Pod) -> None:
    net = plumbing.prepare(pod.spec)
    try:
        assert plumbing.unplugged(net) == []
        pod.host.attach(pod.netns, pod.host.network(1), ifname="eth1")
        assert plumbing.unplugged(net) == ["eth1"]
        assert [n.name for n in net.nics()] == ["eth0"]
    finally:
        plumbing.teardown(net)


@pytest.mark.parametrize("model", ["tcfilter", "macvtap"])
def test_teardown_from_a_json_record_after_a_restart(pod: Pod, model: str) -> None:
    before = pod.snapshot()
    net = plumbing.prepare(pod.spec, model)
    saved = json.dumps(record.to_record(net))
    net.close_fds()  # the shim (and QEMU) went away; only the record is left
    assert pod.snapshot() != before
    record.teardown_record(json.loads(saved))
    assert pod.snapshot() == before
    record.teardown_record(json.loads(saved))  # idempotent
    none = record.to_record(plumbing.prepare(pod.spec, "none"))
    assert none["netns"] == "" and none["endpoints"] == []
    record.teardown_record(none)
