"""Smoke test for bench/net_throughput.py (runc and the local sandbox, tiny counts): every
byte arrives through the CNI bridge and the JSON has the fields `make bench` reports.
Not a timing test; the VM part runs in `make bench` only (minutes under TCG)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "net_throughput.py"


def test_net_throughput_runs_runc_and_local_with_tiny_counts() -> None:
    argv = [sys.executable, str(SCRIPT), "--mib", "4", "--rounds", "1", "--no-vm"]
    result = subprocess.run(argv, capture_output=True, timeout=170)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    report = json.loads(result.stdout)
    assert report["benchmark"] == "net_throughput" and report["mib_per_run"] == 4
    for runtime in ("runc_v2", "kata_local"):
        assert report["results"][runtime]["runs"] == 1
        assert report["results"][runtime]["median_MBps"] > 0
    assert report["ratios"]["local_over_runc"] > 0
