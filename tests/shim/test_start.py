"""The `start` action end to end: output, files, the spawned daemon, reuse, pods, failures."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest

from kata_shim.shim.paths import socket_address, socket_path
from kata_shim.shim.procs import cmdline
from tests.shim.conftest import NAMESPACE, Reaper, make_bundle, run_shim, unique_id, wait_dead

pytestmark = pytest.mark.timeout(60)

OPTIONS = b"\x0a\x19runtimeoptions.v1.Options\x12\x14\x12\x12/etc/kata/foo.toml"
CTD_ADDRESS = "/tmp/kst-nothing/containerd.sock"


def containerd_start(shim: Path, bundle: Path, task_id: str, stdin: bytes | None = None):  # type: ignore[no-untyped-def]
    args = ["-namespace", NAMESPACE, "-address", CTD_ADDRESS, "-publish-binary", "/bin/true"]
    return run_shim(shim, [*args, "-id", task_id, "start"], bundle, stdin=stdin)


def test_containerd_style_start(shim_bin: Path, tmp_path: Path, reaper: Reaper) -> None:
    task_id = unique_id()
    reaper.track_task(task_id, CTD_ADDRESS)
    bundle = make_bundle(tmp_path, task_id)
    began = time.monotonic()
    result = containerd_start(shim_bin, bundle, task_id, stdin=OPTIONS)
    elapsed = time.monotonic() - began
    pid = int((bundle / "shim.pid").read_text())
    reaper.track(pid)
    expected = socket_address(CTD_ADDRESS, NAMESPACE, task_id)
    assert result.returncode == 0, result.stdout
    assert result.stdout == expected.encode()  # stdout+stderr: the address and nothing else
    assert elapsed < 2.0, f"start took {elapsed:.2f}s"
    assert (bundle / "address").read_text() == expected
    assert (bundle / "options.pb").read_bytes() == OPTIONS
    path = socket_path(expected)
    assert path is not None and stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    _check_daemon(pid, task_id)


def _check_daemon(pid: int, task_id: str) -> None:
    argv = cmdline(pid)
    assert argv is not None, "daemon not running"
    assert "start" not in argv and argv[argv.index("-id") + 1] == task_id
    assert argv[argv.index("-namespace") + 1] == NAMESPACE
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid
    fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 3)}
    assert fds[0] == fds[1] == "/dev/null"
    assert fds[3].startswith("socket:")


def test_isulad_style_start(shim_bin: Path, tmp_path: Path, reaper: Reaper) -> None:
    task_id = unique_id("isula")
    reaper.track_task(task_id, "", "isula")
    bundle = make_bundle(tmp_path, task_id)
    env = {k: v for k, v in os.environ.items() if k not in ("TTRPC_ADDRESS", "GRPC_ADDRESS")}
    env["EXIT_FIFO_DIR"] = str(tmp_path / "exit")
    args = ["--id", task_id, "--namespace", "isula", "start"]
    result = run_shim(shim_bin, args, bundle, env=env, combined=False)
    reaper.track(int((bundle / "shim.pid").read_text()))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert result.stdout == socket_address("", "isula", task_id).encode()  # no newline
    assert not (bundle / "options.pb").exists()  # /dev/null stdin: no options


def test_start_reuses_a_live_shim(shim_bin: Path, tmp_path: Path, reaper: Reaper) -> None:
    task_id = unique_id()
    reaper.track_task(task_id, CTD_ADDRESS)
    first = make_bundle(tmp_path / "a", task_id)
    assert containerd_start(shim_bin, first, task_id).returncode == 0
    pid = int((first / "shim.pid").read_text())
    reaper.track(pid)
    second = make_bundle(tmp_path / "b", task_id)
    result = containerd_start(shim_bin, second, task_id)
    assert result.returncode == 0, result.stdout
    assert result.stdout == (first / "address").read_bytes() == (second / "address").read_bytes()
    assert int((second / "shim.pid").read_text()) == pid  # nothing new was spawned


def test_start_replaces_a_stale_socket(shim_bin: Path, tmp_path: Path, reaper: Reaper) -> None:
    task_id = unique_id()
    address = socket_address(CTD_ADDRESS, NAMESPACE, task_id)
    reaper.track(address=address)
    path = socket_path(address)
    assert path is not None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)  # bound, never listening, then closed: a dead shim's socket
    bundle = make_bundle(tmp_path, task_id)
    result = containerd_start(shim_bin, bundle, task_id)
    assert result.returncode == 0, result.stdout
    pid = int((bundle / "shim.pid").read_text())
    reaper.track(pid)
    with socket.socket(socket.AF_UNIX) as probe:
        probe.connect(path)  # the new daemon's listener


def test_pod_container_gets_the_sandbox_shim(
    shim_bin: Path, tmp_path: Path, reaper: Reaper
) -> None:
    sandbox_id, container_id = unique_id("sb"), unique_id("ct")
    reaper.track_task(sandbox_id, CTD_ADDRESS)
    sandbox = make_bundle(tmp_path, sandbox_id, {"io.kubernetes.cri.container-type": "sandbox"})
    assert containerd_start(shim_bin, sandbox, sandbox_id).returncode == 0
    reaper.track(int((sandbox / "shim.pid").read_text()))
    annotations = {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": sandbox_id,
    }
    container = make_bundle(tmp_path, container_id, annotations)
    result = containerd_start(shim_bin, container, container_id)
    assert result.returncode == 0, result.stdout
    assert result.stdout == socket_address(CTD_ADDRESS, NAMESPACE, sandbox_id).encode()
    assert (container / "address").read_bytes() == result.stdout
    assert not (container / "shim.pid").exists()


def test_pod_container_without_sandbox_shim_fails(shim_bin: Path, tmp_path: Path) -> None:
    annotations = {
        "io.kubernetes.cri-o.ContainerType": "container",
        "io.kubernetes.cri-o.SandboxID": unique_id("nosuchsb"),
    }
    task_id = unique_id("ct")
    bundle = make_bundle(tmp_path, task_id, annotations)
    result = run_shim(
        shim_bin, ["-namespace", NAMESPACE, "-id", task_id, "start"], bundle, combined=False
    )
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"has no shim listening" in result.stderr
    assert not (bundle / "address").exists()


def test_start_failure_reports_and_leaves_nothing(shim_bin: Path, tmp_path: Path) -> None:
    task_id = unique_id()
    bundle = tmp_path / task_id
    bundle.mkdir()  # no config.json
    result = run_shim(
        shim_bin, ["-namespace", NAMESPACE, "-id", task_id, "start"], bundle, combined=False
    )
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"start failed" in result.stderr and b"config.json" in result.stderr
    path = socket_path(socket_address("", NAMESPACE, task_id))
    assert path is not None and not os.path.exists(path)
    assert sorted(p.name for p in bundle.iterdir()) == []


def test_start_with_bundle_flag_from_elsewhere(
    shim_bin: Path, tmp_path: Path, reaper: Reaper
) -> None:
    task_id = unique_id()
    reaper.track_task(task_id)
    bundle = make_bundle(tmp_path, task_id)
    args = ["-namespace", NAMESPACE, "-id", task_id, "-bundle", str(bundle), "start"]
    result = run_shim(shim_bin, args, tmp_path)
    assert result.returncode == 0, result.stdout
    pid = int((bundle / "shim.pid").read_text())
    reaper.track(pid)
    assert os.readlink(f"/proc/{pid}/cwd") == str(bundle)


def test_sigterm_right_after_start_still_cleans_up(
    shim_bin: Path, tmp_path: Path, reaper: Reaper
) -> None:
    """A SIGTERM during the daemon's imports is held (blocked) and handled, not fatal."""
    task_id = unique_id()
    reaper.track_task(task_id)
    bundle = make_bundle(tmp_path, task_id)
    result = run_shim(shim_bin, ["-namespace", NAMESPACE, "-id", task_id, "start"], bundle)
    assert result.returncode == 0, result.stdout
    pid = int((bundle / "shim.pid").read_text())
    reaper.track(pid)
    os.kill(pid, 15)
    assert wait_dead(pid, 10)
    path = socket_path(result.stdout.decode())
    assert path is not None and not os.path.exists(path), "socket left behind"
    assert "received SIGTERM" in (bundle / "log").read_text()
