"""Prometheus families of a ShimMetrics, through a per-shim prometheus_client registry.

Imported only when /metrics is scraped (see recorder.py). Metric names are
listed in docs/observability.md; every family is always present (tasks by
state with a zero for each state), so dashboards do not see series vanish.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from kata_shim.metrics.recorder import Histogram, ShimMetrics
from kata_shim.process.states import ProcessState

__all__ = ["ShimCollector", "render", "shim_registry"]

PREFIX = "kata_shim"


def _histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    family.add_metric(labels, histogram.cumulative(), histogram.total)


class ShimCollector(Collector):
    """Builds the families from a ShimMetrics at each scrape."""

    def __init__(self, metrics: ShimMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._tasks()
        yield from self._rpcs()
        yield from self._agent()
        exits = HistogramMetricFamily(
            f"{PREFIX}_exit_to_event_seconds",
            "From the agent reporting a process exit to the TaskExit event being queued.",
        )
        _histogram(exits, [], self.metrics.exit_to_event)
        yield exits
        boot = GaugeMetricFamily(
            f"{PREFIX}_sandbox_boot_seconds",
            "Boot time of this shim's sandbox (start, agent dial, CreateSandbox).",
        )
        if self.metrics.boot_seconds is not None:
            boot.add_metric([], self.metrics.boot_seconds)
        yield boot

    def _tasks(self) -> Iterator[Metric]:
        counts: Counter[tuple[bool, str]] = Counter(self.metrics.task_states())
        for is_init, name, text in (
            (True, "tasks", "Tasks (init processes) of this shim by state."),
            (False, "exec_processes", "Exec processes of this shim by state."),
        ):
            family = GaugeMetricFamily(f"{PREFIX}_{name}", text, labels=["state"])
            for state in ProcessState:
                family.add_metric([state.value], counts.get((is_init, state.value), 0))
            yield family

    def _rpcs(self) -> Iterator[Metric]:
        counts = CounterMetricFamily(
            f"{PREFIX}_rpc_requests", "ttrpc requests served, by method and status code.",
            labels=["method", "code"],
        )  # fmt: skip
        for (method, code), value in sorted(self.metrics.rpc_counts.items()):
            counts.add_metric([method, code], value)
        yield counts
        latency = HistogramMetricFamily(
            f"{PREFIX}_rpc_duration_seconds", "ttrpc request handling time, by method.",
            labels=["method"],
        )  # fmt: skip
        for method, histogram in sorted(self.metrics.rpc_latency.items()):
            _histogram(latency, [method], histogram)
        yield latency

    def _agent(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            f"{PREFIX}_agent_rpc_errors", "Agent RPCs that failed, by method and status code.",
            labels=["method", "code"],
        )  # fmt: skip
        for (method, code), value in sorted(self.metrics.agent_errors.items()):
            errors.add_metric([method, code], value)
        yield errors
        calls = CounterMetricFamily(f"{PREFIX}_agent_rpcs", "Agent RPCs made (any outcome).")
        calls.add_metric([], self.metrics.agent_calls)
        yield calls


def shim_registry(metrics: ShimMetrics) -> CollectorRegistry:
    """A registry of this shim only: its families plus process_* (RSS, CPU, fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ShimCollector(metrics))
    ProcessCollector(registry=registry)
    return registry


def render(registry: object) -> tuple[bytes, str]:
    assert isinstance(registry, CollectorRegistry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
