"""The one logger adapter for container processes, shared by the shim and the guest agent.

Owns how a process is named in logs: every message is prefixed with
`[container]` or `[container/exec]`, and the ids also travel as the record's
`container` and `exec` attributes (for handlers that emit structured fields).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["IdLogger", "id_logger"]


class IdLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with "container[/exec]" (also kept as `extra` fields)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        where = str(extra.get("container", "?"))
        if extra.get("exec"):
            where += f"/{extra['exec']}"
        kwargs.setdefault("extra", {}).update(extra)
        return f"[{where}] {msg}", kwargs


def id_logger(logger: logging.Logger, container_id: str, exec_id: str = "") -> IdLogger:
    """`logger`, naming the init process ("" exec id) or one exec of `container_id`."""
    return IdLogger(logger, {"container": container_id, "exec": exec_id})
