"""kata-shim-monitor aggregating two running shims (local sandboxes, private containerd).

The monitor runs as its own process (`python -m kata_shim.monitor.main`) on a
loopback port it picks; a stale endpoint socket (no shim behind it) counts as
a scrape error and shows as unreachable in /sandboxes.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kata_shim.devenv.shim import KataRig
from kata_shim.metrics.endpoint import SOCKET_NAME
from kata_shim.monitor.aggregate import Scrape, merge
from kata_shim.monitor.main import main, parse_listen
from tests.integration.test_shim_containerd import assert_clean, kill_and_remove, start_sleeper

pytestmark = pytest.mark.timeout(120)

SHIM_TEXT = """# HELP kata_shim_tasks Tasks.
# TYPE kata_shim_tasks gauge
kata_shim_tasks{state="running"} 1.0
# HELP kata_shim_rpc_requests_total RPCs.
# TYPE kata_shim_rpc_requests_total counter
kata_shim_rpc_requests_total{code="OK",method="Create"} 2.0
"""


def test_merge_labels_every_sample_with_its_sandbox() -> None:
    scrapes = [
        Scrape("a", Path("/x"), metrics=SHIM_TEXT),
        Scrape("b", Path("/y"), metrics=SHIM_TEXT),
    ]
    scrapes.append(Scrape("c", Path("/z"), error="ConnectionRefusedError"))
    merged = merge(scrapes)
    assert sorted(merged) == ["kata_shim_rpc_requests", "kata_shim_tasks"]
    labels = [s.labels for s in merged["kata_shim_rpc_requests"].samples]
    assert labels == [{"code": "OK", "method": "Create", "sandbox": s} for s in ("a", "b")]


def test_listen_parsing_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_listen("127.0.0.1:8090") == ("127.0.0.1", 8090)
    assert parse_listen("[::1]:0") == ("::1", 0)
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0 and "--state-root" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["--listen", "nowhere"])
    assert exited.value.code == 2


@pytest.fixture
def rig() -> Iterator[KataRig]:
    with KataRig() as rig:
        yield rig


def _start_monitor(state_root: Path) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "kata_shim.monitor.main", "--state-root", str(state_root)]
    proc = subprocess.Popen([*argv, "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "kata-shim-monitor: listening on 127.0.0.1:PORT (...)"
    assert "listening on" in line, line
    return proc, line.split("listening on ")[1].split()[0]


def _get(address: str, path: str) -> bytes:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as reply:
        body: bytes = reply.read()
        return body


@pytest.mark.integration
def test_monitor_aggregates_two_shims(rig: KataRig) -> None:
    first, second = start_sleeper(rig, "m1"), start_sleeper(rig, "m2")
    stale = rig.state_dir / "stale"
    stale.mkdir()
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale / SOCKET_NAME))
    dead.close()  # the file stays; nothing listens
    monitor, address = _start_monitor(rig.state_dir)
    try:
        body = _get(address, "/metrics").decode()
        sandboxes = json.loads(_get(address, "/sandboxes"))
        agent_url = _get(address, f"/agent-url?sandbox={first}").decode().strip()
    finally:
        monitor.send_signal(signal.SIGTERM)
        _, err = monitor.communicate(timeout=10)
        assert monitor.returncode == 0, err
    print(body)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    for task in (first, second):
        assert values[("kata_shim_tasks", (("sandbox", task), ("state", "running")))] == 1
        key = (("code", "OK"), ("method", "Create"), ("sandbox", task))
        assert values[("kata_shim_rpc_requests_total", key)] == 1
    assert values[("kata_shim_monitor_shims", ())] == 3
    assert values[("kata_shim_monitor_scrape_errors_total", ())] == 1
    by_id = {entry["id"]: entry for entry in sandboxes}
    assert by_id[first]["state"] == by_id[second]["state"] == "running"
    assert by_id[first]["shim_pid"] != by_id[second]["shim_pid"]
    assert by_id["stale"]["state"] == "unreachable"
    assert agent_url == f"unix://{rig.state_dir / first}/agent.sock"
    for task in (first, second):
        kill_and_remove(rig, task)
    assert_clean(rig)
