"""Smoke test for `make bench`: bench/report.py with tiny counts must produce the full JSON shape.

Not a timing test: it only checks that every measurement ran against both
runtimes and that the report has the fields the closing note and the table use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPORT = Path(__file__).resolve().parents[2] / "bench" / "report.py"
sys.path.insert(0, str(REPORT.parent))

from report import bounds_rows, density_rows, file_io_rows  # noqa: E402
from shim_vs_runc import KATA, RUNC, pair  # noqa: E402

FORK_START = REPORT.parent / "fork_start.py"


def test_pair_takes_the_ratio_of_unrounded_medians() -> None:
    """~2 ms exits: medians rounded to 0.1 ms first would give 0.0020 / 0.0015 = 1.333."""
    report = pair({KATA: [0.00196, 0.00197, 0.00195], RUNC: [0.00154, 0.00153, 0.00155]})
    assert report == {
        "kata_median_s": 0.00196,
        "runc_median_s": 0.00154,
        "ratio": 1.273,
        "runs": 3,
    }


def test_report_runs_with_tiny_counts_and_has_every_field(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(REPORT), "--runs", "2", "--pods", "2", "--exit-runs", "3"]
    argv += ["--rpc-seconds", "0.2", "--no-external", "--json", str(out)]
    result = subprocess.run(argv, capture_output=True, timeout=170)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    report = json.loads(result.stdout)
    assert json.loads(out.read_text()) == report
    for key in ("start", "exit"):
        assert report[key]["runs"] == 2 if key == "start" else 3
        assert 0 < report[key]["kata_median_s"] < 30 and 0 < report[key]["runc_median_s"] < 30
    assert report["concurrent_start"]["pods"] == 2
    memory = report["memory"]
    assert memory["kata"]["pods"] == memory["runc"]["pods"] == 2
    assert memory["kata"]["agents_found"] == 2  # one kata-agent-py per local sandbox
    assert memory["runc"]["agents_found"] == 0
    assert memory["kata"]["shim_pss_kb"] > 0 and memory["runc"]["shim_pss_kb"] > 0
    for callers in ("callers1", "callers16"):
        assert report["rpc"][callers]["kata_rps"] > 0 and report["rpc"][callers]["runc_rps"] > 0
    assert report["concurrent_start"]["kata_host_cpu_s_per_pod"] >= 0
    bounds = report["bounds"]
    assert bounds["python_bare_s"] > 0 and bounds["daemon_anon_kb"] > bounds["python_bare_anon_kb"]
    assert bounds["floor_s"] > report["start"]["runc_median_s"]
    assert set(report["targets"]) == {
        "start_ratio",
        "shim_pss_kb",
        "agent_pss_kb",
        "exit_ratio",
        "rpc_ratio",
        "concurrent_ratio",
    }
    assert all(isinstance(t["met"], bool) for t in report["targets"].values())
    assert "target start_ratio" in result.stderr.decode()  # the table


def test_fork_start_compares_fork_and_cold() -> None:
    argv = [sys.executable, str(FORK_START), "--runs", "2", "--pods", "2"]
    result = subprocess.run(argv, capture_output=True, timeout=170)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    report = json.loads(result.stdout)
    for mode in ("cold", "fork"):
        for key in ("start_s", "ready_s", "delete_s"):
            assert 0 < report[mode][key] < 30
        assert report[mode]["memory"]["pods"] == 2
        assert report[mode]["memory"]["daemon_pss_kb"] > 0
    assert report["cold"]["memory"]["server_pss_kb"] == 0
    assert report["fork"]["memory"]["server_pss_kb"] > 0  # the daemons really were forked


VM_DENSITY = REPORT.parent / "vm_density.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_vm_density_reports_memory_per_pod(guest_image: Path) -> None:
    argv = [sys.executable, str(VM_DENSITY), "--image", str(guest_image), "--pods", "1"]
    argv += ["--designs", "image", "--io-mib", "8", "--io-files", "50"]
    result = subprocess.run(argv, capture_output=True, timeout=880)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    density = json.loads(result.stdout)
    report = density["image"]
    memory = report["memory"]
    assert memory["qemu_pss_anon_kb"] > 0 and memory["qemu_pss_file_kb"] > 0
    assert memory["shim_pss_kb"] > 0 and memory["guest_used_kb"] > 0
    assert memory["pod_pss_kb"] >= memory["qemu_pss_kb"] + memory["shim_pss_kb"]
    assert report["runc_shim_pss_kb"] > 0 and report["create_to_first_output_s"] > 0
    assert 0 < report["bare_kernel_to_init_s"] < report["create_to_first_output_s"] + 60
    rows = density_rows({"image": report, "initrd": report})
    assert len(rows) == 7 and rows[0][1] == memory["qemu_pss_anon_kb"]
    for shared_fs in ("virtio-9p", "virtio-fs"):  # share_io checks the 50 extracted files
        io = density["file_io"][shared_fs]
        assert io["write_mb_s"] > 0 and io["read_mb_s"] > 0 and io["tar_x_s"] > 0
    assert len(file_io_rows(density)) == 4


VM_BOUNDS = REPORT.parent / "vm_bounds.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_vm_bounds_splits_the_guest_start_into_stages(guest_image: Path) -> None:
    argv = [sys.executable, str(VM_BOUNDS), "--image", str(guest_image), "--runs", "1"]
    result = subprocess.run([*argv, "--designs", "image"], capture_output=True, timeout=280)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    report = json.loads(result.stdout)["image"]
    stages = [report[key] for key in ("kernel_to_init_s", "init_to_selftest_s")]
    stages += [report[f"{what}_{run}_s"] for what in ("python_start", "agent_import")
               for run in ("cold", "warm")]  # fmt: skip
    assert all(s > 0 for s in stages), report  # guest uptime only moves forward
    assert sum(stages) < report["host_wall_s"]  # QEMU's own start is not in the guest's clock
    assert any("kata_shim.guest.main" in line for line in report["agent_import_top"])
    assert "kernel code" in report["guest_kernel_memory"]
    rows = bounds_rows({"image": report, "initrd": report})
    assert [r[1] for r in rows] == [report[k] for k in ("kernel_to_init_s", "init_to_selftest_s",
                                    "python_start_warm_s", "agent_import_warm_s")]  # fmt: skip
