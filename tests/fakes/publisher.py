"""RecordingPublisher: the Publisher injected by task-service tests; keeps events in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from google.protobuf.message import Message


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, Message]] = []
        self.closed = False

    def publish(self, topic: str, event: Message) -> None:
        copy = type(event)()
        copy.CopyFrom(event)
        self.events.append((topic, copy))

    async def close(self, timeout: float = 5.0) -> None:
        self.closed = True

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.events]

    def of(self, topic: str) -> list[Message]:
        return [event for t, event in self.events if t == topic]

    def exits(self) -> list[tuple[str, str, int]]:
        """(container_id, id, exit_status) of every TaskExit, in order."""
        return [(e.container_id, e.id, e.exit_status) for e in self.of("/tasks/exit")]  # type: ignore[attr-defined]

    def trace(self) -> list[str]:
        """A compact, comparable description: topic plus the event's id fields."""
        out = []
        for topic, event in self.events:
            ident = getattr(event, "exec_id", "") or getattr(event, "id", "")
            name = getattr(event, "container_id", "")
            out.append(f"{topic} {name}/{ident}" if ident and ident != name else f"{topic} {name}")
        return out

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; events: {self.trace()}")
            await asyncio.sleep(0.005)

    async def wait_topic(self, topic: str, count: int = 1, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: len(self.of(topic)) >= count, timeout)
