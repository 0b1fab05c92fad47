"""Synchronous Task calls to a live shim over its socket (tests only)."""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.message import Message

from kata_shim.devenv.shim import KataRig
from kata_shim.proto.task_ttrpc import TASK_DESC
from kata_shim.ttrpc.client import Client

__all__ = ["bundle_dir", "call", "shim_socket"]


def bundle_dir(rig: KataRig, task_id: str) -> Any:
    return rig.containerd.work / "state" / "io.containerd.runtime.v2.task" / "default" / task_id


def shim_socket(rig: KataRig, task_id: str) -> str:
    """The filesystem path of the socket the task's shim serves (from <bundle>/address)."""
    return (bundle_dir(rig, task_id) / "address").read_text().strip().removeprefix("unix://")


async def _call(path: str, method: str, request: Message, timeout: float) -> Any:
    client = await Client.connect_unix(path, timeout=timeout)
    try:
        response_type = TASK_DESC.methods[method].response_type
        return await client.call(TASK_DESC.name, method, request, response_type, timeout=timeout)
    finally:
        client.close()


def call(path: str, method: str, request: Message, timeout: float = 10.0) -> Any:
    """One Task RPC on a fresh connection; ShimError subclasses propagate."""
    return asyncio.run(_call(path, method, request, timeout))
