"""Publishers against a real ttrpc server standing in for containerd's Events service,
and a small script standing in for containerd's `publish` sub-command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import empty_pb2
from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim import errors
from kata_shim.events.publisher import (
    BinaryPublisher,
    LogPublisher,
    RetryPolicy,
    TtrpcPublisher,
    make_publisher,
)
from kata_shim.proto import events_pb2, events_service_pb2
from kata_shim.proto.events_service_ttrpc import EventsBase
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher, RequestContext

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

QUICK = RetryPolicy(attempt_timeout=1.0, max_retries=3, backoff=0.05)


class FakeEvents(EventsBase):
    """Records envelopes; `fail` maps a topic to the error its Forward raises (`times` times)."""

    def __init__(self) -> None:
        self.envelopes: list[events_service_pb2.Envelope] = []
        self.attempts: dict[str, int] = {}
        self.fail: dict[str, tuple[errors.ShimError, int]] = {}

    async def Forward(
        self, ctx: RequestContext, request: events_service_pb2.ForwardRequest
    ) -> empty_pb2.Empty:
        topic = request.envelope.topic
        self.attempts[topic] = self.attempts.get(topic, 0) + 1
        if topic in self.fail:
            error, times = self.fail[topic]
            if times != 0:
                self.fail[topic] = (error, times - 1)
                raise error
        self.envelopes.append(request.envelope)
        return empty_pb2.Empty()

    def topics(self) -> list[str]:
        return [e.topic for e in self.envelopes]

    async def wait_count(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.envelopes) < n:
                await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def events_server(path: Path, service: FakeEvents) -> AsyncIterator[Server]:
    dispatcher = Dispatcher()
    dispatcher.register(EventsBase.DESC, service)
    server = Server(dispatcher)
    await server.serve_unix(str(path))
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


def exit_event(n: int) -> events_pb2.TaskExit:
    return events_pb2.TaskExit(container_id="c1", id=f"e{n}", pid=42, exit_status=n)


async def test_events_arrive_in_order_with_bare_type_urls_and_timestamps(tmp_path: Path) -> None:
    service = FakeEvents()
    async with events_server(tmp_path / "ttrpc.sock", service):
        publisher = TtrpcPublisher(f"unix://{tmp_path}/ttrpc.sock", "k8s.io", policy=QUICK)
        publisher.publish("/tasks/start", events_pb2.TaskStart(container_id="c1", pid=42))
        for n in range(50):
            publisher.publish(f"/tasks/exit{n}", exit_event(n))
        await service.wait_count(51)
        await publisher.close()
    assert service.topics() == ["/tasks/start", *(f"/tasks/exit{n}" for n in range(50))]
    first = service.envelopes[0]
    assert first.namespace == "k8s.io"
    assert first.event.type_url == "containerd.events.TaskStart"
    assert events_pb2.TaskStart.FromString(first.event.value).pid == 42
    stamps = [e.timestamp.ToNanoseconds() for e in service.envelopes]
    assert all(s > 0 for s in stamps) and stamps == sorted(stamps)
    assert service.envelopes[1].event.type_url == "containerd.events.TaskExit"


async def test_reconnects_after_containerd_restarts_on_the_same_socket(tmp_path: Path) -> None:
    path = tmp_path / "ttrpc.sock"
    first, second = FakeEvents(), FakeEvents()
    policy = RetryPolicy(attempt_timeout=1.0, max_retries=10, backoff=0.1)
    publisher = TtrpcPublisher(str(path), "default", policy=policy)
    async with events_server(path, first):
        publisher.publish("/tasks/a", exit_event(1))
        await first.wait_count(1)
    publisher.publish("/tasks/b", exit_event(2))  # containerd is down: retried
    publisher.publish("/tasks/c", exit_event(3))
    await asyncio.sleep(0.3)
    async with events_server(path, second):
        await second.wait_count(2)
        await publisher.close()
    assert first.topics() == ["/tasks/a"]
    assert second.topics() == ["/tasks/b", "/tasks/c"]


async def test_head_item_is_retried_in_place_so_nothing_reorders(tmp_path: Path) -> None:
    service = FakeEvents()
    service.fail["/tasks/a"] = (errors.Unavailable("busy"), 2)
    async with events_server(tmp_path / "s", service):
        publisher = TtrpcPublisher(str(tmp_path / "s"), "default", policy=QUICK)
        for topic in ("/tasks/a", "/tasks/b", "/tasks/c"):
            publisher.publish(topic, exit_event(0))
        await service.wait_count(3)
        await publisher.close()
    assert service.topics() == ["/tasks/a", "/tasks/b", "/tasks/c"]
    assert service.attempts["/tasks/a"] == 3


async def test_head_item_is_dropped_after_bounded_retries_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = FakeEvents()
    service.fail["/tasks/bad"] = (errors.Unavailable("always"), -1)
    async with events_server(tmp_path / "s", service):
        publisher = TtrpcPublisher(str(tmp_path / "s"), "default", policy=QUICK)
        with caplog.at_level(logging.ERROR, logger="kata_shim.events.publisher"):
            publisher.publish("/tasks/bad", exit_event(1))
            publisher.publish("/tasks/good", exit_event(2))
            await service.wait_count(1)
            await publisher.close()
    assert service.attempts["/tasks/bad"] == QUICK.max_retries + 1
    assert service.topics() == ["/tasks/good"]
    assert any("dropping event /tasks/bad" in r.getMessage() for r in caplog.records)


async def test_invalid_argument_is_not_retried(tmp_path: Path) -> None:
    service = FakeEvents()
    service.fail["/tasks/bad"] = (errors.InvalidArgument("bad namespace"), -1)
    async with events_server(tmp_path / "s", service):
        publisher = TtrpcPublisher(str(tmp_path / "s"), "default", policy=QUICK)
        publisher.publish("/tasks/bad", exit_event(1))
        publisher.publish("/tasks/good", exit_event(2))
        await service.wait_count(1)
        await publisher.close()
    assert service.attempts["/tasks/bad"] == 1


async def test_close_gives_up_after_its_timeout(tmp_path: Path) -> None:
    publisher = TtrpcPublisher(str(tmp_path / "nobody"), "default", policy=QUICK)
    publisher.publish("/tasks/x", exit_event(1))
    loop = asyncio.get_running_loop()
    began = loop.time()
    await publisher.close(timeout=0.2)
    assert loop.time() - began < 1.0
    publisher.publish("/tasks/late", exit_event(2))  # after close: dropped, no error raised


PUBLISH_SCRIPT = """\
import sys
from pathlib import Path
log = Path(sys.argv[0]).with_suffix(".log")
data = sys.stdin.buffer.read()
with log.open("a") as f:
    f.write(repr((sys.argv[1:], data.hex())) + "\\n")
sys.exit(1 if "/tasks/fail" in sys.argv else 0)
"""


async def test_binary_publisher_runs_containerds_publish_command(tmp_path: Path) -> None:
    script = tmp_path / "fake-containerd"
    script.write_text(f"#!{sys.executable}\n{PUBLISH_SCRIPT}")
    script.chmod(0o755)
    publisher = BinaryPublisher(str(script), "/run/containerd.sock", "moby", policy=QUICK)
    publisher.publish("/tasks/start", events_pb2.TaskStart(container_id="c1", pid=7))
    publisher.publish("/tasks/fail", exit_event(1))
    publisher.publish("/tasks/exit", exit_event(2))
    await publisher.close(timeout=10)
    lines = [eval(line) for line in script.with_suffix(".log").read_text().splitlines()]
    args = [line[0] for line in lines]
    assert args[0] == [
        "--address", "/run/containerd.sock", "publish", "--topic", "/tasks/start",
        "--namespace", "moby",
    ]  # fmt: skip
    assert [a[4] for a in args] == ["/tasks/start"] + ["/tasks/fail"] * 4 + ["/tasks/exit"]
    payload = AnyMessage.FromString(bytes.fromhex(lines[0][1]))
    assert payload.type_url == "containerd.events.TaskStart"
    assert events_pb2.TaskStart.FromString(payload.value).pid == 7


async def test_log_publisher_logs_each_event(caplog: pytest.LogCaptureFixture) -> None:
    publisher = LogPublisher("isula")
    with caplog.at_level(logging.INFO, logger="kata_shim.events.publisher"):
        publisher.publish("/tasks/exit", exit_event(3))
    await publisher.close()
    (record,) = caplog.records
    assert (
        "post event /tasks/exit" in record.getMessage() and "exit_status: 3" in record.getMessage()
    )


async def test_make_publisher_chooses_by_what_is_configured() -> None:
    chosen = make_publisher(
        "ns", "/run/containerd/containerd.sock.ttrpc", "/usr/bin/containerd", "a"
    )
    assert isinstance(chosen, TtrpcPublisher)
    chosen = make_publisher("ns", "", "/usr/bin/containerd", "/run/containerd/containerd.sock")
    assert isinstance(chosen, BinaryPublisher)
    assert isinstance(make_publisher("ns", None, "/usr/bin/containerd", ""), LogPublisher)
    assert isinstance(make_publisher("ns", None, None, None), LogPublisher)
