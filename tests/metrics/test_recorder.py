"""ShimMetrics recording and exposition; the ttrpc server/client observers feeding it."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kata_shim import errors
from kata_shim.errors import Code
from kata_shim.metrics.recorder import Histogram, ShimMetrics, code_name
from tests.fakes.echo import connected, echo, echo_server, run_on

pytestmark = pytest.mark.timeout(30)


def values(metrics: ShimMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_code_names_are_gos() -> None:
    assert [code_name(c) for c in (0, 1, 5, 14)] == ["OK", "Canceled", "NotFound", "Unavailable"]
    assert code_name(99) == "99"


def test_histogram_buckets_are_cumulative() -> None:
    histogram = Histogram(bounds=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert (histogram.count, histogram.total) == (4, pytest.approx(7.65))


def test_families_and_values() -> None:
    metrics = ShimMetrics()
    metrics.task_states = lambda: [(True, "running"), (True, "running"), (False, "created")]
    metrics.rpc("containerd.task.v2.Task", "Create", Code.OK, 0.003)
    metrics.rpc("containerd.task.v2.Task", "Kill", Code.NOT_FOUND, 0.0001)
    metrics.agent_rpc("grpc.AgentService", "WaitProcess", Code.OK, 1.0)
    metrics.agent_rpc("grpc.AgentService", "WaitProcess", Code.UNAVAILABLE, 1.0)
    metrics.exit_published(0.002)
    found = values(metrics)
    assert found[("kata_shim_tasks", (("state", "running"),))] == 2
    assert found[("kata_shim_tasks", (("state", "paused"),))] == 0
    assert found[("kata_shim_exec_processes", (("state", "created"),))] == 1
    assert found[("kata_shim_rpc_requests_total", (("code", "NotFound"), ("method", "Kill")))] == 1
    key = ("kata_shim_rpc_duration_seconds_bucket", (("le", "0.005"), ("method", "Create")))
    assert found[key] == 1
    errors_key = (("code", "Unavailable"), ("method", "WaitProcess"))
    assert found[("kata_shim_agent_rpc_errors_total", errors_key)] == 1
    assert found[("kata_shim_agent_rpcs_total", ())] == 2
    assert found[("kata_shim_exit_to_event_seconds_count", ())] == 1
    assert not any(name == "kata_shim_sandbox_boot_seconds" for name, _ in found)  # not booted
    metrics.booted(2.5)
    assert values(metrics)[("kata_shim_sandbox_boot_seconds", ())] == 2.5


def test_ttrpc_server_and_client_observers_see_every_call() -> None:
    served: list[tuple[str, str, int]] = []
    called: list[tuple[str, str, int]] = []

    async def main() -> None:
        observer = lambda s, m, c, t: served.append((s, m, c))  # noqa: E731
        async with echo_server(observer=observer) as (_, _, path), connected(path) as client:
            client.observer = lambda s, m, c, t: called.append((s, m, c))
            assert await echo(client, "Echo", "x") == "X"
            with pytest.raises(errors.NotFound):
                await echo(client, "Fail", "NotFound")

    run_on("uvloop", main())
    expected = [("test.Echo", "Echo", Code.OK), ("test.Echo", "Fail", Code.NOT_FOUND)]
    assert served == expected and called == expected
