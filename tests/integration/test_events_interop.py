"""Interop with a real ttrpc peer: our client forwards a TaskExit to containerd 1.6.

`ctr events`, subscribed before, must print the event: proves frame format,
envelope encoding, bare Any type URLs and timestamps are what containerd accepts.
"""

from __future__ import annotations

import asyncio
import json
import select
import time

import pytest

from kata_shim.devenv.containerd import PrivateContainerd
from kata_shim.errors import InvalidArgument
from kata_shim.events.envelope import make_envelope, make_forward_request
from kata_shim.proto import events_pb2, events_service_pb2
from kata_shim.proto.events_service_ttrpc import EventsClient
from kata_shim.ttrpc.client import Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _read_lines_until(proc, needle: str, timeout: float) -> list[str]:
    """Collect ctr's stdout lines until one contains `needle` (or time runs out)."""
    lines: list[str] = []
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if not ready:
            continue
        chunk = proc.stdout.read1(65536)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        lines += [line.decode() for line in done]
        if any(needle in line for line in lines):
            break
    return lines


async def _forward(ctd: PrivateContainerd, request: events_service_pb2.ForwardRequest) -> None:
    client = await Client.connect_unix(ctd.ttrpc_address, timeout=5)
    try:
        await EventsClient(client).Forward(request, timeout=5)
    finally:
        client.close()
        await client.wait_closed()


def test_forwarded_task_exit_reaches_ctr_events(containerd: PrivateContainerd) -> None:
    events = containerd.popen_ctr("events")
    try:
        time.sleep(1.0)  # let ctr subscribe before we publish
        exit_event = events_pb2.TaskExit(
            container_id="interop-c1", id="interop-c1", pid=4242, exit_status=7
        )
        exit_event.exited_at.GetCurrentTime()
        asyncio.run(
            _forward(containerd, make_forward_request("default", "/tasks/exit", exit_event))
        )
        lines = _read_lines_until(events, "interop-c1", timeout=10)
    finally:
        events.kill()
        events.communicate()
    matching = [line for line in lines if "/tasks/exit" in line and "interop-c1" in line]
    assert matching, f"ctr events never showed the event; got {lines!r}"
    payload = json.loads(matching[0][matching[0].index("{") :])
    print("ctr events:", matching[0])
    assert payload["container_id"] == "interop-c1"
    assert payload["pid"] == 4242
    assert payload["exit_status"] == 7


def test_containerd_rejects_zero_timestamp(containerd: PrivateContainerd) -> None:
    """containerd validates envelopes: the error must come back as InvalidArgument."""
    envelope = make_envelope("default", "/tasks/exit", events_pb2.TaskExit(container_id="x"))
    envelope.ClearField("timestamp")
    with pytest.raises(InvalidArgument):
        asyncio.run(_forward(containerd, events_service_pb2.ForwardRequest(envelope=envelope)))
