"""Reaching a sandbox's guest agent: its address, and the one dial-retry-health loop.

`AgentAddress` says how the host reaches an agent: a unix socket (the local
agent's own, or the host end of a VM's virtio-serial port) or a vhost-vsock
guest CID and port. `dial_agent` connects and asks Health.Check until the
agent answers SERVING; it stops early when `alive` raises (the sandbox died)
and raises `silent(last_error)` once the dial timeout (`[agent.kata]
dial_timeout`) has passed. Every backend's `Sandbox.connect_agent` is this
loop; a returned client has passed the health check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kata_shim.errors import ShimError, Unavailable
from kata_shim.proto import health_pb2
from kata_shim.proto.health_ttrpc import HealthClient
from kata_shim.ttrpc.client import Client
from kata_shim.unixpath import short_address

__all__ = [
    "AGENT_VSOCK_PORT",
    "AgentAddress",
    "DialPolicy",
    "UnixAddress",
    "VsockAddress",
    "dial_agent",
]

#: the port the guest agent listens on over vsock (Kata's)
AGENT_VSOCK_PORT = 1024
#: bound of one connection attempt
CONNECT_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """The agent behind a host unix socket."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)

    def url(self) -> str:
        return f"unix://{self.path}"

    async def open(self) -> Client:
        with short_address(self.path) as address:  # a long state root (kata_shim/unixpath.py)
            return await Client.connect_unix(address, timeout=CONNECT_TIMEOUT)


@dataclass(frozen=True, slots=True)
class VsockAddress:
    """The agent behind a vhost-vsock guest CID (never used on hosts without vhost-vsock)."""

    cid: int
    port: int = AGENT_VSOCK_PORT

    def __str__(self) -> str:
        return f"vhost-vsock CID {self.cid} port {self.port}"

    def url(self) -> str:
        return f"vsock://{self.cid}:{self.port}"

    async def open(self) -> Client:
        from kata_shim.native import vsock as native_vsock

        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(
            None, native_vsock.connect, self.cid, self.port, CONNECT_TIMEOUT
        )
        return await Client.from_socket(sock)


AgentAddress = UnixAddress | VsockAddress


@dataclass(frozen=True, slots=True)
class DialPolicy:
    """How long to keep dialling, the pause after a failed attempt, the health check's bound."""

    timeout: float
    retry: float = 0.1
    health_timeout: float = 2.0


async def dial_agent(
    address: AgentAddress,
    policy: DialPolicy,
    *,
    alive: Callable[[], None],
    silent: Callable[[Exception | None], ShimError],
) -> Client:
    """A client whose agent answered Health.Check SERVING, dialled until `policy.timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.timeout
    last: Exception | None = None
    while loop.time() < deadline:
        alive()
        try:
            return await _attempt(address, policy.health_timeout)
        except (OSError, ShimError) as exc:
            last = exc
            await asyncio.sleep(policy.retry)
    raise silent(last)


async def _attempt(address: AgentAddress, health_timeout: float) -> Client:
    client = await address.open()
    try:
        reply = await HealthClient(client).Check(health_pb2.CheckRequest(), timeout=health_timeout)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unavailable("agent not serving yet")
    except BaseException:
        client.close()
        raise
    return client
