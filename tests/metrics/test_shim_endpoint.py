"""A running shim's management endpoint, scraped after containers ran through a private containerd.

Local sandbox (no VM): the sandbox state dir gets shim-monitor.sock (0600);
/metrics carries the real counts (Create served, the running task, the exec's
exit-to-event latency, boot time), /agent-url the agent socket, /info the
state; the socket disappears with the sandbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kata_shim.devenv.shim import KataRig
from kata_shim.metrics.endpoint import SOCKET_NAME
from kata_shim.metrics.http import get_unix
from tests.integration.test_shim_containerd import (
    _out,
    assert_clean,
    kill_and_remove,
    start_sleeper,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def rig() -> Iterator[KataRig]:
    with KataRig() as rig:
        yield rig


def get(path: str, target: str) -> tuple[int, bytes]:
    return asyncio.run(get_unix(path, target))


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_agent_url_and_info_of_a_running_shim(rig: KataRig) -> None:
    task = start_sleeper(rig, "scraped")
    execd = rig.ctr("task", "exec", "--exec-id", "e1", task, *rig.sh("exit 3"))
    assert execd.returncode == 3, _out(execd)
    sock = rig.state_dir / task / SOCKET_NAME
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

    status, body = get(str(sock), "/metrics")
    assert status == 200, body
    values = samples(body)
    print(body.decode())
    assert values[("kata_shim_rpc_requests_total", (("code", "OK"), ("method", "Create")))] >= 1
    assert values[("kata_shim_rpc_duration_seconds_count", (("method", "Start"),))] >= 2
    assert values[("kata_shim_tasks", (("state", "running"),))] == 1
    assert sum(v for (name, _), v in values.items() if name == "kata_shim_exec_processes") == 0
    assert values[("kata_shim_exit_to_event_seconds_count", ())] >= 1  # the exec's exit
    assert 0 < values[("kata_shim_sandbox_boot_seconds", ())] < 30
    assert values[("kata_shim_agent_rpcs_total", ())] >= 3
    assert values[("process_resident_memory_bytes", ())] > 0

    status, url = get(str(sock), "/agent-url")
    assert (status, url.decode().strip()) == (200, f"unix://{rig.state_dir / task}/agent.sock")
    status, info = get(str(sock), "/info")
    described = json.loads(info)
    assert described["id"] == task and described["state"] == "running"
    assert described["backend"] == "local" and described["shim_pid"] > 0
    assert get(str(sock), "/nope")[0] == 404

    kill_and_remove(rig, task)
    assert not sock.exists()
    assert_clean(rig)
