"""Helpers to drive a real agent through the local sandbox in tests.

`local_agent()` starts the agent (LocalSandbox), yields a connected typed
client, and afterwards stops the agent and asserts its state dir is gone.
`container_spec()` builds an OCI spec from `runc spec` for a busybox rootfs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kata_shim import oci
from kata_shim.devenv.containerd import busybox_rootfs
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox.base import SandboxSpec
from kata_shim.sandbox.local import LocalSandbox
from kata_shim.ttrpc.client import Client

_ROOTFS_CACHE = Path(tempfile.gettempdir()) / "kata-shim-test-busybox"


def shared_rootfs() -> Path:
    """A busybox rootfs built once per machine (read-only use by tests)."""
    if not (_ROOTFS_CACHE / "bin" / "sh").exists():
        shutil.rmtree(_ROOTFS_CACHE, ignore_errors=True)
        busybox_rootfs(_ROOTFS_CACHE)
    return _ROOTFS_CACHE


def container_spec(args: list[str], *, terminal: bool = False, memory: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["runc", "spec", "--bundle", tmp], check=True)
        spec: dict[str, Any] = json.loads((Path(tmp) / "config.json").read_text())
    spec["root"] = {"path": str(shared_rootfs()), "readonly": True}
    spec["process"]["args"] = args
    spec["process"]["terminal"] = terminal
    spec["process"]["env"] = ["PATH=/bin:/usr/bin", "TERM=xterm"]
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    if memory:
        spec["linux"]["resources"]["memory"] = {"limit": memory, "swap": memory}
    return spec


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
        SandboxSpec(sandbox_id=sandbox_id, state_dir=state, agent={"dial_timeout": 20}, debug=True)
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
        reply = await read(
            agent_pb2.ReadStreamRequest(container_id=cid, exec_id=exec_id, len=65536)
        )
        if not reply.data:
            return bytes(out)
        out += reply.data
