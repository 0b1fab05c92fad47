"""The monitor's HTTP side: /metrics (all shims + our own), /sandboxes, /agent-url.

Every request scrapes the shims afresh (concurrently, each bounded by
`timeout`), as Kata's kata-monitor does; nothing is cached between scrapes.
Own metrics: kata_shim_monitor_shims (endpoints found), ..._scrape_errors_total,
..._scrape_duration_seconds, and this process's kata_shim_monitor_process_*.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from kata_shim.metrics.http import Request, Response, Route
from kata_shim.monitor.aggregate import MergedFamilies, Scrape, discover, merge, scrape

__all__ = ["Monitor"]


class Monitor:
    def __init__(self, state_root: Path, timeout: float = 3.0) -> None:
        self.state_root = state_root
        self.timeout = timeout
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = CollectorRegistry(auto_describe=False)
        self.shims = Gauge(
            "kata_shim_monitor_shims", "Shim endpoints found at the last scrape.",
            registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "kata_shim_monitor_scrape_errors", "Shim scrapes that failed (unreachable, bad reply).",
            registry=self.registry,
        )  # fmt: skip
        self.duration = Histogram(
            "kata_shim_monitor_scrape_duration_seconds", "Time to scrape every shim once.",
            registry=self.registry,
        )  # fmt: skip
        ProcessCollector(namespace="kata_shim_monitor", registry=self.registry)

    def routes(self) -> dict[str, Route]:
        return {
            "/": self._index,
            "/metrics": self._metrics,
            "/sandboxes": self._sandboxes,
            "/agent-url": self._agent_url,
        }

    async def scrape_all(self, metrics: bool = True) -> list[Scrape]:
        found = discover(self.state_root)
        began = time.monotonic()
        results = list(
            await asyncio.gather(*(scrape(sid, sock, self.timeout, metrics) for sid, sock in found))
        )
        if metrics:
            self.duration.observe(time.monotonic() - began)
        self.shims.set(len(found))
        failed = sum(1 for result in results if result.error)
        if failed:
            self.errors.inc(failed)
        return results

    async def _metrics(self, request: Request) -> Response:
        results = await self.scrape_all()
        shims = CollectorRegistry(auto_describe=False)
        shims.register(MergedFamilies(merge(results)))
        body = generate_latest(shims) + generate_latest(self.registry)
        return Response(200, body, CONTENT_TYPE_LATEST)

    async def _sandboxes(self, request: Request) -> Response:
        results = await self.scrape_all(metrics=False)
        body = json.dumps([result.summary() for result in results], indent=2) + "\n"
        return Response(200, body.encode(), "application/json")

    async def _agent_url(self, request: Request) -> Response:
        sandbox = request.query.get("sandbox", "")
        for result in await self.scrape_all(metrics=False):
            if result.sandbox == sandbox and not result.error:
                return Response.text(f"{result.info.get('agent_url', '')}\n")
        return Response.text(f"no running sandbox {sandbox!r} (see /sandboxes)\n", 404)

    async def _index(self, request: Request) -> Response:
        return Response.text(
            "kata-shim-monitor: /metrics  /sandboxes  /agent-url?sandbox=<id>\n"
            f"state root: {self.state_root}\n"
        )
