"""Publishing task events to containerd: one ordered queue, one forwarder task.

`Publisher.publish(topic, event)` never blocks: it stamps and enqueues. A
single forwarder task sends the queue's HEAD item and removes it only once it
was delivered or given up on, so events never reorder. Each attempt is
bounded (5 s); after a failure the connection is dropped and re-dialled on the
next attempt (containerd restarts break it); the head item is retried with a
growing back-off and, after `max_retries`, dropped with an ERROR log.
Implementations: ttrpc Events/Forward to $TTRPC_ADDRESS (containerd ≥ 1.3),
the `publish` sub-command of containerd's binary, and log-only (iSulad).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import text_format
from google.protobuf.message import Message

from kata_shim.errors import Code, ShimError, Unavailable
from kata_shim.events.envelope import bare_any, make_envelope
from kata_shim.proto import events_service_pb2
from kata_shim.proto.events_service_ttrpc import EventsClient
from kata_shim.ttrpc.client import Client

__all__ = [
    "BinaryPublisher",
    "LogPublisher",
    "Publisher",
    "RetryPolicy",
    "TtrpcPublisher",
    "make_publisher",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the forwarder tries before dropping the head event."""

    attempt_timeout: float = 5.0  #: per delivery attempt (containerd's publisher: 5 s)
    max_retries: int = 5  #: retries after the first attempt
    backoff: float = 1.0  #: retry n sleeps n*backoff (at most 5*backoff)
    max_queued: int = 4096  #: beyond this, new events are dropped with an error


class Publisher(Protocol):
    """Where the task service sends events. `publish` enqueues in call order."""

    def publish(self, topic: str, event: Message) -> None: ...

    async def close(self, timeout: float = 5.0) -> None: ...


@dataclass(frozen=True, slots=True)
class _Item:
    topic: str
    event: Message
    when_ns: int  # enqueue time: the envelope's timestamp


class _QueuedPublisher(abc.ABC):
    """The ordered queue, the forwarder task and the retry policy; `_send` is the transport."""

    def __init__(self, namespace: str, policy: RetryPolicy | None) -> None:
        self.namespace = namespace
        self.policy = policy or RetryPolicy()
        self._queue: collections.deque[_Item] = collections.deque()  # forwarder pops the head
        self._wakeup = asyncio.Event()
        self._forwarder: asyncio.Task[None] | None = None
        self._closed = False

    def publish(self, topic: str, event: Message) -> None:
        if self._closed:
            log.error("publisher closed: dropping %s %s", topic, _describe(event))
            return
        if len(self._queue) >= self.policy.max_queued:
            log.error("event queue full (%d): dropping %s", self.policy.max_queued, topic)
            return
        self._queue.append(_Item(topic, event, time.time_ns()))
        self._wakeup.set()
        if self._forwarder is None:
            self._forwarder = asyncio.get_running_loop().create_task(self._forward())

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def _forward(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            item = self._queue[0]
            await self._deliver(item)
            self._queue.popleft()

    async def _deliver(self, item: _Item) -> None:
        policy = self.policy
        for attempt in range(policy.max_retries + 1):
            if attempt:
                await asyncio.sleep(min(policy.backoff * attempt, 5 * policy.backoff))
            try:
                async with asyncio.timeout(policy.attempt_timeout):
                    await self._send(item)
                return
            except Exception as exc:  # any failure: re-dial, retry the same item
                await self._reset()
                if isinstance(exc, ShimError) and exc.code == Code.INVALID_ARGUMENT:
                    log.error("event %s rejected: %s; dropping it", item.topic, exc)
                    return
                log.warning("publishing %s (attempt %d) failed: %s", item.topic, attempt + 1, exc)
        log.error(
            "dropping event %s %s after %d attempts",
            item.topic,
            _describe(item.event),
            policy.max_retries + 1,
        )

    @abc.abstractmethod
    async def _send(self, item: _Item) -> None:
        """Deliver one event or raise."""

    @abc.abstractmethod
    async def _reset(self) -> None:
        """Forget the connection after a failure (the next `_send` re-dials)."""

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered within `timeout`, then stop the forwarder."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queue and self._forwarder is not None and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._queue:
            log.error("publisher closing with %d undelivered events", len(self._queue))
        if self._forwarder is not None:
            self._forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._forwarder
        await self._reset()


def _describe(event: Message) -> str:
    return f"{event.DESCRIPTOR.full_name}{{{text_format.MessageToString(event, as_one_line=True)}}}"


class TtrpcPublisher(_QueuedPublisher):
    """containerd.services.events.ttrpc.v1.Events/Forward on `ttrpc_address`."""

    def __init__(
        self, ttrpc_address: str, namespace: str, *, policy: RetryPolicy | None = None
    ) -> None:
        super().__init__(namespace, policy)
        self.address = ttrpc_address.removeprefix("unix://")
        self._client: Client | None = None

    async def _send(self, item: _Item) -> None:
        if self._client is None or self._client.closed:
            timeout = self.policy.attempt_timeout
            self._client = await Client.connect_unix(self.address, timeout=timeout)
        envelope = make_envelope(self.namespace, item.topic, item.event, when_ns=item.when_ns)
        request = events_service_pb2.ForwardRequest(envelope=envelope)
        await EventsClient(self._client).Forward(request, timeout=self.policy.attempt_timeout)

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.wait_closed(), 1.0)


class BinaryPublisher(_QueuedPublisher):
    """`<publish_binary> --address A publish --topic T --namespace N`, the Any on stdin."""

    def __init__(
        self,
        publish_binary: str,
        containerd_address: str,
        namespace: str,
        *,
        policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(namespace, policy)
        self.binary = publish_binary
        self.address = containerd_address

    async def _send(self, item: _Item) -> None:
        argv = [self.binary, "--address", self.address, "publish"]
        argv += ["--topic", item.topic, "--namespace", self.namespace]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await proc.communicate(bare_any(item.event).SerializeToString())
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip()
            raise Unavailable(f"{self.binary} publish exited {proc.returncode}: {detail}")

    async def _reset(self) -> None:
        return None  # a fresh process per attempt: nothing to forget


class LogPublisher:
    """No event service (iSulad): log each event, as Kata's log forwarder does."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def publish(self, topic: str, event: Message) -> None:
        log.info("post event %s (namespace %s): %s", topic, self.namespace, _describe(event))

    async def close(self, timeout: float = 5.0) -> None:
        return None


def make_publisher(
    namespace: str,
    ttrpc_address: str | None,
    publish_binary: str | None,
    containerd_address: str | None,
) -> Publisher:
    """TTRPC when TTRPC_ADDRESS is set; else the publish binary with -address; else logging."""
    if ttrpc_address:
        return TtrpcPublisher(ttrpc_address, namespace)
    if publish_binary and containerd_address:
        return BinaryPublisher(publish_binary, containerd_address, namespace)
    return LogPublisher(namespace)
