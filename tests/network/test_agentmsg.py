"""kata_shim.network.agentmsg + plumbing.configure_guest: upstream message shapes, call order."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from kata_shim.network import agentmsg, netlink, plumbing
from kata_shim.network.discovery import NetInterface, NetnsState
from kata_shim.network.models import Endpoint, Model
from kata_shim.proto import agent_pb2, types_pb2
from tests.fakes.network_agent import RecordingNetworkAgent

ETH0 = netlink.Link(2, "eth0", "0a:58:0a:58:00:05", 1450, "veth", 0x1003)
ADDRS = (
    netlink.Address(2, socket.AF_INET, "10.88.0.5", 16, 0),
    netlink.Address(2, socket.AF_INET6, "fd00::5", 64, 0),
)
ROUTES = (
    netlink.Route(socket.AF_INET, "", "10.88.0.1", 2, "", 0, 0, 0),
    netlink.Route(socket.AF_INET, "10.88.0.0/16", "", 2, "10.88.0.5", 253, 0, 1400),
    netlink.Route(socket.AF_INET6, "", "fd00::1", 2, "", 0, 0, 0),
    netlink.Route(socket.AF_INET, "10.9.0.0/16", "10.88.0.1", 7, "", 0, 0, 0),  # not carried
)
NEIGH = (netlink.Neighbour(socket.AF_INET, 2, "10.88.0.9", "02:00:00:00:00:09", 0x80, 0),)


def _net() -> plumbing.PodNetwork:
    eth0 = NetInterface(ETH0, ADDRS)
    state = NetnsState(Path("/run/netns/x"), (eth0,), ROUTES, NEIGH)
    return plumbing.PodNetwork(
        Model.TCFILTER, state, [Endpoint(eth0, Model.TCFILTER, "tap0_kata", None)]
    )


def test_interface_message() -> None:
    msg = agentmsg.interface(_net().endpoints[0])
    assert msg == types_pb2.Interface(
        device="eth0",
        name="eth0",
        IPAddresses=[
            types_pb2.IPAddress(family=types_pb2.v4, address="10.88.0.5", mask="16"),
            types_pb2.IPAddress(family=types_pb2.v6, address="fd00::5", mask="64"),
        ],
        mtu=1450,
        hwAddr="0a:58:0a:58:00:05",
        type="virtual",
        raw_flags=0,
    )
    # the wire shape is upstream's: UpdateInterfaceRequest.interface = field 1
    wire = agent_pb2.UpdateInterfaceRequest(interface=msg).SerializeToString()
    assert wire[0] == 0x0A


def test_routes_device_routes_first_and_only_carried_interfaces() -> None:
    net = _net()
    assert net.state is not None
    got = agentmsg.routes(net.state, net.endpoints)
    assert [(r.dest, r.gateway, r.device, r.family) for r in got] == [
        ("10.88.0.0/16", "", "eth0", types_pb2.v4),
        ("", "10.88.0.1", "eth0", types_pb2.v4),
        ("", "fd00::1", "eth0", types_pb2.v6),
    ]
    assert got[0].source == "10.88.0.5" and got[0].scope == 253 and got[0].mtu == 1400


def test_noarp_flag_is_carried() -> None:
    net = _net()
    link = netlink.Link(2, "eth0", "0a:58:0a:58:00:05", 1450, "veth", 0x1003 | netlink.IFF_NOARP)
    endpoint = Endpoint(NetInterface(link, ()), Model.TCFILTER, "tap0_kata", None)
    assert agentmsg.interface(endpoint).raw_flags == netlink.IFF_NOARP
    assert agentmsg.interface(net.endpoints[0]).raw_flags == 0


def test_configure_guest_calls_in_kata_order() -> None:
    agent = RecordingNetworkAgent()
    asyncio.run(plumbing.configure_guest(agent, _net()))
    assert [name for name, _ in agent.calls] == [
        "update_interface",
        "update_routes",
        "add_arp_neighbors",
    ]
    [neigh] = agent.calls[2][1]  # type: ignore[misc]
    assert neigh == types_pb2.ARPNeighbor(
        toIPAddress=types_pb2.IPAddress(family=types_pb2.v4, address="10.88.0.9"),
        device="eth0",
        lladdr="02:00:00:00:00:09",
        state=0x80,
        flags=0,
    )


def test_configure_guest_without_network_does_nothing() -> None:
    agent = RecordingNetworkAgent()
    asyncio.run(plumbing.configure_guest(agent, plumbing.PodNetwork(Model.NONE)))
    assert agent.calls == []
