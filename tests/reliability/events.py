"""A `ctr events` subscriber in a thread, for tests that wait for a given event."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from kata_shim.devenv.containerd import PrivateContainerd

__all__ = ["Events"]


class Events:
    """Collects (topic, payload) of every event `ctr events` prints."""

    def __init__(self, containerd: PrivateContainerd) -> None:
        self.proc = containerd.popen_ctr("events")
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            topic = next((w for w in line.split() if w.startswith("/")), "")
            try:
                payload = json.loads(line[line.index("{") :]) if "{" in line else {}
            except ValueError:
                payload = {}
            with self._lock:
                self.seen.append((topic, payload))

    def find(self, topic: str, container_id: str, exec_id: str = "") -> dict[str, Any] | None:
        """The first `topic` event of the container (TaskExit: of its init, or of `exec_id`)."""
        with self._lock:
            for seen_topic, payload in self.seen:
                if seen_topic != topic or payload.get("container_id") != container_id:
                    continue
                if topic == "/tasks/exit" and payload.get("id") != (exec_id or container_id):
                    continue
                return payload
        return None

    def wait(
        self, topic: str, container_id: str, exec_id: str = "", timeout: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (event := self.find(topic, container_id, exec_id)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {topic} for {container_id}; saw {self.seen}")
            time.sleep(0.05)
        return event

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._thread.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
