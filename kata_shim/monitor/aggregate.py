"""Discovering shims and merging their scrapes into one exposition.

A running shim is a `<state_root>/<sandbox-id>/shim-monitor.sock`. Each
shim's /metrics text is parsed (prometheus_client's parser) and every sample
gets a `sandbox="<id>"` label; families of the same name from several shims
are merged into one (the text format allows a family only once).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from kata_shim.metrics.endpoint import SOCKET_NAME
from kata_shim.metrics.http import get_unix

__all__ = ["MergedFamilies", "Scrape", "discover", "merge", "scrape"]


def discover(state_root: Path) -> list[tuple[str, Path]]:
    """(sandbox id, endpoint socket) of every sandbox dir holding a shim endpoint."""
    try:
        candidates = sorted(state_root.iterdir())
    except OSError:
        return []
    found = []
    for directory in candidates:
        sock = directory / SOCKET_NAME
        if sock.is_socket():
            found.append((directory.name, sock))
    return found


@dataclass
class Scrape:
    """One shim's answers: its /info (or an error) and its /metrics text."""

    sandbox: str
    socket: Path
    info: dict[str, object] = field(default_factory=dict)
    metrics: str = ""
    error: str = ""

    def summary(self) -> dict[str, object]:
        if self.error:
            return {"id": self.sandbox, "state": "unreachable", "error": self.error}
        return {"id": self.sandbox, **{k: v for k, v in self.info.items() if k != "id"}}


async def _get(sock: Path, target: str, timeout: float) -> bytes:
    status, body = await get_unix(str(sock), target, timeout)
    if status != 200:
        raise OSError(f"{target}: HTTP {status}")
    return body


async def scrape(sandbox: str, sock: Path, timeout: float, metrics: bool = True) -> Scrape:
    """Ask one shim for /info (and /metrics); failures end up in `error`, never raised."""
    result = Scrape(sandbox, sock)
    try:
        result.info = json.loads(await _get(sock, "/info", timeout))
        if metrics:
            result.metrics = (await _get(sock, "/metrics", timeout)).decode()
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        result.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return result


def merge(scrapes: Iterable[Scrape]) -> dict[str, Metric]:
    """Families by name with every sample labelled by its sandbox."""
    merged: dict[str, Metric] = {}
    for result in scrapes:
        if result.error or not result.metrics:
            continue
        for family in text_string_to_metric_families(result.metrics):
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                labels = {**sample.labels, "sandbox": result.sandbox}
                target.add_sample(sample.name, labels, sample.value, sample.timestamp)
    return merged


class MergedFamilies(Collector):
    """A collector yielding already merged families (one scrape's worth)."""

    def __init__(self, families: dict[str, Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families.values()
