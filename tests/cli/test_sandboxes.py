"""`kata-shim sandboxes`: state-dir entries, shim pid from shim.pid or the process table."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from kata_shim.cli.sandboxes import list_sandboxes, render_json, render_table, shim_pids


def _proc(root: Path, pid: int, *argv: str) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_shim_pids_finds_serving_shims_only(tmp_path: Path) -> None:
    shim = "/usr/bin/containerd-shim-kata-v2"
    _proc(tmp_path, 10, "/usr/bin/python3", "-s", shim, "-namespace", "k8s.io", "-id", "pod1")
    _proc(tmp_path, 11, shim, "-namespace", "default", "-id", "pod2", "start")
    _proc(tmp_path, 12, "/usr/bin/python3", "-m", "kata_shim.shim.main", "-id", "pod3")
    _proc(tmp_path, 13, "sleep", "-id", "pod4")
    (tmp_path / "self").mkdir()
    assert shim_pids(tmp_path) == {"pod1": (10, "k8s.io"), "pod3": (12, "")}


def test_running_and_stale(tmp_path: Path) -> None:
    state, proc = tmp_path / "state", tmp_path / "proc"
    (state / "live").mkdir(parents=True)
    (state / "live" / "shim.pid").write_text(f"{os.getpid()}\n")
    (state / "live" / "qmp.sock").write_text("")
    eth0 = {"name": "eth0", "mac": "f2:88:f1:87:f7:fe", "tap": "tap0_kata",
            "addresses": ["10.31.0.2/24"]}  # fmt: skip
    (state / "live" / "network.json").write_text(json.dumps({"version": 1, "interfaces": [eth0]}))
    (state / "crashed").mkdir()
    (state / "crashed" / "shim.pid").write_text(str(_dead_pid()))
    (state / "found").mkdir()
    (state / "found" / "agent.log").write_text("")
    (state / "orphan").mkdir()
    _proc(proc, os.getpid(), "containerd-shim-kata-v2", "-namespace", "ns1", "-id", "found")
    entries = {e.id: e for e in list_sandboxes(state, proc)}
    assert entries["live"].state == "running" and entries["live"].backend == "qemu"
    assert entries["crashed"].state == "stale"
    assert entries["found"].state == "running" and entries["found"].namespace == "ns1"
    assert entries["found"].pid == os.getpid() and entries["found"].backend == "local"
    assert entries["orphan"].state == "stale" and entries["orphan"].pid == 0
    table = render_table(entries.values()).splitlines()
    assert table[0].split() == ["SANDBOX", "STATE", "PID", "NAMESPACE", "BACKEND", "NETWORK"]
    assert table[-1].split() == ["orphan", "stale", "-", "-", "-", "-"]
    assert table[3].split()[-1] == "eth0=10.31.0.2/24"  # live
    assert json.loads(render_json([entries["found"]]))[0]["namespace"] == "ns1"
    assert json.loads(render_json([entries["live"]]))[0]["interfaces"] == [eth0]


def test_missing_state_dir_is_empty(tmp_path: Path) -> None:
    assert list_sandboxes(tmp_path / "nothing") == []
