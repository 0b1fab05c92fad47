"""Helpers to drive a real agent through the local sandbox in tests.

`local_agent()` starts the agent (LocalSandbox), yields a connected typed
client, and afterwards stops the agent and asserts its state dir is gone.
`container_spec()` / `shared_rootfs()` are re-exported from kata_shim.devenv.specs.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kata_shim import oci
from kata_shim.config.schema import AgentConfig
from kata_shim.devenv.specs import container_spec, shared_rootfs
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox.base import SandboxSpec
from kata_shim.sandbox.local import LocalSandbox
from kata_shim.ttrpc.client import Client

__all__ = [
    "AgentHandle",
    "container_spec",
    "create_request",
    "local_agent",
    "read_all",
    "shared_rootfs",
]


def create_request(cid: str, spec: dict[str, Any]) -> agent_pb2.CreateContainerRequest:
    return agent_pb2.CreateContainerRequest(
        container_id=cid, exec_id=cid, OCI=oci.spec_from_json(spec)
    )


@dataclass
class AgentHandle:
    sandbox: LocalSandbox
    client: Client
    agent: AgentServiceClient


@contextlib.asynccontextmanager
async def local_agent(sandbox_id: str = "t") -> AsyncIterator[AgentHandle]:
    state = Path(tempfile.mkdtemp(prefix="ks-agent-", dir="/tmp"))
    sandbox = LocalSandbox(
        SandboxSpec(
            sandbox_id=sandbox_id, state_dir=state, agent=AgentConfig(dial_timeout=20), debug=True
        )
    )
    await sandbox.start()
    client = await sandbox.connect_agent()
    try:
        yield AgentHandle(sandbox, client, AgentServiceClient(client))
    finally:
        client.close()
        await client.wait_closed()
        await sandbox.cleanup()
        assert not state.exists()


async def read_all(
    agent: AgentServiceClient, cid: str, exec_id: str, stderr: bool = False
) -> bytes:
    out = bytearray()
    read = agent.ReadStderr if stderr else agent.ReadStdout
    while True:
        data = await read(agent_pb2.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=65536))
        if not data:
            return bytes(out)
        out += data
