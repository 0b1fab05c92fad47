"""Fuzz a real shim daemon's ttrpc endpoint while one of its tasks runs.

≥ 10,000 frames over ~200 connections: valid headers around corrupted Task
requests (every Task method, mutated payloads), truncated frames, oversize and
absurd lengths, bad stream ids and message types, and plain random bytes. The
shim (same pid) must survive, the task must still be RUNNING, a fresh
connection must still get a correct Connect reply, and after the task is
removed nothing may be left behind.
"""

from __future__ import annotations

import os
import random
import socket
import time

import pytest

from kata_shim.devenv.shim import KataRig
from kata_shim.proto import task_pb2, ttrpc_pb2
from kata_shim.ttrpc import wire
from tests.integration.test_shim_containerd import kill_and_remove, start_sleeper, wait_status
from tests.reliability.leaks import Inventory, leaks
from tests.reliability.shimclient import call, shim_socket
from tests.ttrpc.test_fuzz import mutate

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

FRAMES = 10_000
METHODS = [
    "State",
    "Create",
    "Start",
    "Delete",
    "Pids",
    "Pause",
    "Resume",
    "Checkpoint",
    "Kill",
    "Exec",
    "ResizePty",
    "CloseIO",
    "Update",
    "Wait",
    "Stats",
    "Connect",
    "Shutdown",
]


READ_ONLY = ("State", "Pids", "Stats", "Connect", "Wait")


def _request(rng: random.Random, task_id: str) -> bytes:
    method = rng.choice(METHODS)
    ids = ["", "../x", "x" * rng.randrange(300), rng.randbytes(8).hex()]
    if method in READ_ONLY:  # the running task may only be looked at, never changed
        ids.append(task_id)
    inner = task_pb2.StateRequest(id=rng.choice(ids), exec_id=rng.choice(["", "e1", "../e"]))
    payload = inner.SerializeToString()
    if rng.random() < 0.7:
        payload = mutate(rng, payload) if payload else rng.randbytes(rng.randrange(40))
    request = ttrpc_pb2.Request(
        service=rng.choice(["containerd.task.v2.Task"] * 4 + ["grpc.AgentService", ""]),
        method=method,
        payload=payload,
        timeout_nano=rng.choice([0, 1, 10**6, 10**9]),
    )
    return request.SerializeToString()


def _stream(rng: random.Random, task_id: str, stream_id: int) -> tuple[bytes, int]:
    """(bytes, frame count) for one connection."""
    frames = []
    for _ in range(rng.randrange(20, 80)):
        body = _request(rng, task_id)
        if rng.random() < 0.3:
            body = mutate(rng, body)
        kind = rng.choice([1] * 8 + [2, 3, 0, 0xFF])
        sid = stream_id if rng.random() < 0.9 else rng.randrange(1 << 32)
        stream_id += 2
        frames.append(wire.encode_frame(sid, kind, body))
    data = b"".join(frames)
    tail = rng.randrange(6)
    if tail == 0:
        data = data[: rng.randrange(len(data))]  # truncated in the middle of a frame
    elif tail == 1:
        length = rng.choice([wire.MAX_PAYLOAD + 1, 1 << 24, 0xFFFFFFFF, 50_000_000])
        data += wire.HEADER.pack(length, stream_id, 1, 0) + rng.randbytes(200)
    elif tail == 2:
        data += rng.randbytes(rng.randrange(1, 2000))
    elif tail == 3:
        data = mutate(rng, data)
    return data, len(frames) + (1 if tail == 1 else 0)


SENTINEL = (1 << 31) - 1  # odd and above every stream id a fuzz connection uses
DRAIN = 0.05  # after the sentinel's reply: the replies still on their way


def _replies(buf: bytes) -> tuple[int, bool]:
    """(complete response frames in buf, whether the sentinel's reply is among them)."""
    count, pos, sentinel = 0, 0, False
    while pos + wire.HEADER_SIZE <= len(buf):
        length, stream_id, _kind, _flags = wire.HEADER.unpack_from(buf, pos)
        if pos + wire.HEADER_SIZE + length > len(buf):
            break
        count += 1
        sentinel = sentinel or stream_id == SENTINEL
        pos += wire.HEADER_SIZE + length
    return count, sentinel


def _send(path: str, data: bytes, task_id: str) -> int:
    """Write the fuzz bytes plus a valid Connect; read until its reply, EOF or 0.3 s of silence.

    Connect is answered inline, so its reply may overtake those of the requests before
    it (ttrpc matches replies by stream id, never by order): after it, whatever else
    comes within DRAIN seconds is read too. Returns how many response frames the shim
    sent (proof that it parsed the stream).
    """
    connect = ttrpc_pb2.Request(
        service="containerd.task.v2.Task",
        method="Connect",
        payload=task_pb2.ConnectRequest(id=task_id).SerializeToString(),
    )
    data += wire.encode_frame(SENTINEL, 1, connect.SerializeToString())
    buf = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        sock.connect(path)
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                buf += chunk
                if _replies(buf)[1]:
                    sock.settimeout(DRAIN)
        except (ConnectionError, TimeoutError):
            pass  # the shim may drop a connection it cannot parse: that is fine
    return _replies(buf)[0]


def test_fuzzed_frames_do_not_hurt_the_shim_or_its_task(rig: KataRig, before: Inventory) -> None:
    task_id = start_sleeper(rig, "fuzz")
    path = shim_socket(rig, task_id)
    shim_pid = call(path, "Connect", task_pb2.ConnectRequest(id=task_id)).shim_pid
    rng = random.Random(20261123)
    sent = connections = replies = 0
    began = time.monotonic()
    while sent < FRAMES:
        data, frames = _stream(rng, task_id, 1)
        replies += _send(path, data, task_id)
        sent += frames
        connections += 1
        if connections % 50 == 0:
            os.kill(shim_pid, 0)  # still alive
    took = time.monotonic() - began
    print(f"fuzz: {sent} frames, {connections} connections, {replies} replies, {took:.1f}s")
    assert sent >= FRAMES
    assert replies >= FRAMES // 5  # the shim really parsed and answered the streams
    os.kill(shim_pid, 0)
    reply = call(path, "Connect", task_pb2.ConnectRequest(id=task_id))
    assert reply.shim_pid == shim_pid and reply.task_pid > 0
    wait_status(rig, task_id, "RUNNING", timeout=5)
    assert rig.ctr("task", "exec", "--exec-id", "after", task_id, "/bin/true").returncode == 0
    kill_and_remove(rig, task_id)
    assert leaks(before, rig) == []
