"""What one shim measures, recorded in plain Python (no metrics library on the hot path).

`ShimMetrics` keeps counters and fixed-bucket histograms in dicts; the
Prometheus families are only built when someone scrapes (exposition.py imports
prometheus_client then: importing it costs ~20 ms, which the shim's start path
does not pay). Recorded: ttrpc RPCs served (count by method/code, latency by
method), agent RPC errors (by method/code), exit-to-event latency, the last
sandbox boot time; tasks by state are read at scrape time from `task_states`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

from kata_shim.errors import Code

__all__ = ["LATENCY_BUCKETS", "Histogram", "ShimMetrics", "code_name"]

#: seconds; RPCs are sub-millisecond to seconds (Create boots a VM), exits likewise
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

TaskStates = Callable[[], Iterable[tuple[bool, str]]]


_GO_NAMES = {code: "".join(part.capitalize() for part in code.name.split("_")) for code in Code} | {
    Code.OK: "OK",
    Code.CANCELLED: "Canceled",
}


def code_name(code: int) -> str:
    """gRPC code name as Go's codes.Code prints it (`OK`, `NotFound`, ...)."""
    name: str = _GO_NAMES.get(code, str(code))  # type: ignore[call-overload]
    return name


class Histogram:
    """Counts per upper bound (the last slot is +Inf), sum and count."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, cumulative count)] in Prometheus order, ending with +Inf."""
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


def _no_tasks() -> list[tuple[bool, str]]:
    return []


class ShimMetrics:
    """Everything one shim process records; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.rpc_counts: dict[tuple[str, str], int] = {}  # (method, code name) → count
        self.rpc_latency: dict[str, Histogram] = {}  # method → seconds
        self.agent_errors: dict[tuple[str, str], int] = {}  # (method, code name) → count
        self.agent_calls = 0
        self.exit_to_event = Histogram()
        self.boot_seconds: float | None = None
        self.task_states: TaskStates = _no_tasks
        self._registry: object | None = None  # prometheus_client CollectorRegistry, lazily

    # recording (event loop, cheap) -------------------------------------------------------
    def rpc(self, service: str, method: str, code: int, seconds: float) -> None:
        """ttrpc server RpcObserver."""
        key = (method, code_name(code))
        self.rpc_counts[key] = self.rpc_counts.get(key, 0) + 1
        histogram = self.rpc_latency.get(method)
        if histogram is None:
            histogram = self.rpc_latency[method] = Histogram()
        histogram.observe(seconds)

    def agent_rpc(self, service: str, method: str, code: int, seconds: float) -> None:
        """ttrpc client RpcObserver of the agent connection: errors are counted."""
        self.agent_calls += 1
        if code != Code.OK:
            key = (method, code_name(code))
            self.agent_errors[key] = self.agent_errors.get(key, 0) + 1

    def exit_published(self, seconds: float) -> None:
        self.exit_to_event.observe(seconds)

    def booted(self, seconds: float) -> None:
        self.boot_seconds = seconds

    # exposition --------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """(Prometheus text body, its content type); imports prometheus_client on first use."""
        from kata_shim.metrics import exposition

        if self._registry is None:
            self._registry = exposition.shim_registry(self)
        return exposition.render(self._registry)
