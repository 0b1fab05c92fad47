"""Build `containerd.services.events.ttrpc.v1.Envelope`s for task events.

containerd 1.6 resolves an event's Any by its exact full name, so the type URL
is the bare message name (`containerd.events.TaskExit`, no
`types.googleapis.com/` prefix), and it rejects a zero timestamp.
"""

from __future__ import annotations

import time

from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import Message

from kata_shim.proto import events_service_pb2

__all__ = ["bare_any", "make_envelope", "make_forward_request"]


def bare_any(message: Message) -> AnyMessage:
    """Pack `message` into an Any whose type URL is its bare full name."""
    return AnyMessage(type_url=message.DESCRIPTOR.full_name, value=message.SerializeToString())


def make_envelope(
    namespace: str, topic: str, event: Message, when_ns: int | None = None
) -> events_service_pb2.Envelope:
    """An Envelope stamped `when_ns` (default: now) carrying `event`."""
    envelope = events_service_pb2.Envelope(namespace=namespace, topic=topic)
    envelope.timestamp.FromNanoseconds(time.time_ns() if when_ns is None else when_ns)
    envelope.event.CopyFrom(bare_any(event))
    return envelope


def make_forward_request(
    namespace: str, topic: str, event: Message
) -> events_service_pb2.ForwardRequest:
    return events_service_pb2.ForwardRequest(envelope=make_envelope(namespace, topic, event))
