"""The `delete` action: idempotent, bounded, prints DeleteResponse, cleans up after dead shims."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim import mounts
from kata_shim.devenv.shim import write_config
from kata_shim.proto import task_pb2
from kata_shim.shim.paths import socket_address, socket_path
from tests.shim.conftest import NAMESPACE, Reaper, alive, make_bundle, run_shim, unique_id

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def conf_env(tmp_path: Path) -> dict[str, str]:
    """Environment whose KATA_CONF_FILE puts sandbox state under tmp_path/sbs."""
    config = write_config(tmp_path / "configuration.toml", state_dir=tmp_path / "sbs")
    return {**os.environ, "KATA_CONF_FILE": str(config)}


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)


def _sleeper(procs: list[subprocess.Popen[bytes]], *marks: str) -> subprocess.Popen[bytes]:
    code = "import time; time.sleep(300)"
    proc = subprocess.Popen([sys.executable, "-c", code, *marks], start_new_session=True)
    procs.append(proc)
    return proc


def _delete(
    shim: Path, bundle: Path, task_id: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    began = time.monotonic()
    args = ["-namespace", NAMESPACE, "-address", "", "-id", task_id, "-bundle", str(bundle)]
    result = run_shim(shim, [*args, "delete"], bundle, env=env, combined=False)
    return result, time.monotonic() - began


def _response(raw: bytes) -> task_pb2.DeleteResponse:
    response = task_pb2.DeleteResponse()
    response.ParseFromString(raw)
    return response


def _start(shim: Path, bundle: Path, task_id: str, env: dict[str, str], reaper: Reaper) -> int:
    reaper.track_task(task_id)
    result = run_shim(shim, ["-namespace", NAMESPACE, "-id", task_id, "start"], bundle, env=env)
    assert result.returncode == 0, result.stdout
    pid = int((bundle / "shim.pid").read_text())
    reaper.track(pid)
    return pid


def test_delete_with_nothing_left_is_fast_and_idempotent(
    shim_bin: Path, tmp_path: Path, conf_env: dict[str, str]
) -> None:
    task_id = unique_id()
    bundle = tmp_path / task_id
    bundle.mkdir()  # containerd's bundle after a clean teardown: nothing of ours
    for _ in range(2):
        before = time.time()
        result, elapsed = _delete(shim_bin, bundle, task_id, conf_env)
        assert result.returncode == 0, result.stderr
        assert result.stderr == b""
        response = _response(result.stdout)
        assert (response.pid, response.exit_status) == (0, 137)
        assert before - 1 <= response.exited_at.seconds <= time.time() + 1
        assert elapsed < 2.0, f"delete took {elapsed:.2f}s"


def test_delete_cleans_up_after_a_hung_shim(
    shim_bin: Path,
    tmp_path: Path,
    conf_env: dict[str, str],
    reaper: Reaper,
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    task_id = unique_id()
    bundle = make_bundle(tmp_path, task_id)
    pid = _start(shim_bin, bundle, task_id, conf_env, reaper)
    state_dir = tmp_path / "sbs" / task_id
    (state_dir / "agent").mkdir(parents=True)
    agent = _sleeper(sleepers, "--state-dir", f"{state_dir}/agent")  # stands for the local agent
    unrelated = _sleeper(sleepers, str(tmp_path / "sbs" / "other"))
    time.sleep(0.8)  # let the daemon come up, then freeze it: alive but not answering
    os.kill(pid, signal.SIGSTOP)
    result, elapsed = _delete(shim_bin, bundle, task_id, conf_env)
    assert result.returncode == 0, result.stderr
    assert _response(result.stdout).exit_status == 137
    assert elapsed < 5.0, f"delete took {elapsed:.2f}s"
    assert not alive(pid), "hung shim survived delete"
    assert agent.wait(2) == -signal.SIGKILL
    assert unrelated.poll() is None, "a process of another sandbox was killed"
    assert not state_dir.exists()
    path = socket_path((bundle / "address").read_text())
    assert path is not None and not os.path.exists(path), "stale socket left"
    assert b"stopping unresponsive shim" in result.stderr


def test_delete_leaves_a_healthy_shim_serving(
    shim_bin: Path, tmp_path: Path, conf_env: dict[str, str], reaper: Reaper
) -> None:
    """containerd runs `delete` after closing its client even when the shim hosts other tasks."""
    task_id = unique_id()
    bundle = make_bundle(tmp_path, task_id)
    pid = _start(shim_bin, bundle, task_id, conf_env, reaper)
    state_dir = tmp_path / "sbs" / task_id
    state_dir.mkdir(parents=True)
    result, elapsed = _delete(shim_bin, bundle, task_id, conf_env)
    assert result.returncode == 0
    assert elapsed < 5.0
    assert alive(pid) and state_dir.exists()
    assert b"still answers" in result.stderr


def test_delete_waits_for_a_shim_still_tearing_down(
    shim_bin: Path, tmp_path: Path, conf_env: dict[str, str], reaper: Reaper
) -> None:
    """A shim that answers Connect after the first second is tearing down (a VM's teardown
    under TCG takes seconds): delete waits for it (3.5 s in all), then cleans up."""
    task_id = unique_id()
    bundle = make_bundle(tmp_path, task_id)
    pid = _start(shim_bin, bundle, task_id, conf_env, reaper)
    state_dir = tmp_path / "sbs" / task_id
    state_dir.mkdir(parents=True)
    ends = threading.Timer(2.8, os.kill, (pid, signal.SIGTERM))  # its teardown ends at 2.8 s
    ends.start()
    try:
        result, elapsed = _delete(shim_bin, bundle, task_id, conf_env)
    finally:
        ends.cancel()
    assert result.returncode == 0, result.stderr
    assert 2.7 < elapsed < 4.5, f"delete took {elapsed:.2f}s"
    assert not alive(pid) and not state_dir.exists()
    assert b"still answers" not in result.stderr and b"unresponsive" not in result.stderr


def test_pod_container_delete_never_touches_the_sandbox(
    shim_bin: Path,
    tmp_path: Path,
    conf_env: dict[str, str],
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    sandbox_id, task_id = unique_id("sb"), unique_id("ct")
    annotations = {"io.kubernetes.docker.type": "container", "io.kubernetes.sandbox.id": sandbox_id}
    bundle = make_bundle(tmp_path, task_id, annotations)
    (bundle / "shim.pid").write_text(str(os.getpid()))  # never trusted for a pod container
    state_dir = tmp_path / "sbs" / sandbox_id
    state_dir.mkdir(parents=True)
    agent = _sleeper(sleepers, str(state_dir))
    result, _ = _delete(shim_bin, bundle, task_id, conf_env)
    assert result.returncode == 0
    assert state_dir.exists() and agent.poll() is None


def test_recycled_pid_is_not_killed(
    shim_bin: Path,
    tmp_path: Path,
    conf_env: dict[str, str],
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    task_id = unique_id()
    bundle = make_bundle(tmp_path, task_id)
    stranger = _sleeper(sleepers, "-id", task_id)  # right id, but not a kata-shim daemon
    (bundle / "shim.pid").write_text(str(stranger.pid))
    result, _ = _delete(shim_bin, bundle, task_id, conf_env)
    assert result.returncode == 0
    assert stranger.poll() is None


def test_delete_unmounts_the_rootfs(
    shim_bin: Path, tmp_path: Path, conf_env: dict[str, str]
) -> None:
    task_id = unique_id()
    bundle = make_bundle(tmp_path, task_id)
    rootfs = bundle / "rootfs"
    subprocess.run(["mount", "-t", "tmpfs", "kst-test", str(rootfs)], check=True)
    try:
        assert mounts.is_mount_point(rootfs)
        result, _ = _delete(shim_bin, bundle, task_id, conf_env)
        assert result.returncode == 0
        assert not mounts.is_mount_point(rootfs)
    finally:
        mounts.unmount_all_under(rootfs)


def test_bad_configuration_still_succeeds(shim_bin: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[hypervisor.local]\nenable_debug = 'yes'\n")
    task_id = unique_id()
    bundle = make_bundle(tmp_path, task_id)
    env = {**os.environ, "KATA_CONF_FILE": str(bad)}
    result, _ = _delete(shim_bin, bundle, task_id, env)
    assert result.returncode == 0
    assert _response(result.stdout).exit_status == 137
    assert b"configuration unusable" in result.stderr


def test_socket_of_a_live_other_shim_is_kept(
    shim_bin: Path, tmp_path: Path, conf_env: dict[str, str], reaper: Reaper
) -> None:
    """A pod container's `address` names the sandbox's live socket: delete must keep it."""
    sandbox_id = unique_id("sb")
    sandbox = make_bundle(tmp_path, sandbox_id, {"io.kubernetes.cri.container-type": "sandbox"})
    _start(shim_bin, sandbox, sandbox_id, conf_env, reaper)
    task_id = unique_id("ct")
    annotations = {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": sandbox_id,
    }
    bundle = make_bundle(tmp_path, task_id, annotations)
    result = run_shim(
        shim_bin, ["-namespace", NAMESPACE, "-id", task_id, "start"], bundle, env=conf_env
    )
    assert result.returncode == 0, result.stdout
    delete_result, _ = _delete(shim_bin, bundle, task_id, conf_env)
    assert delete_result.returncode == 0
    path = socket_path(socket_address("", NAMESPACE, sandbox_id))
    assert path is not None and os.path.exists(path)


def test_delete_uses_the_state_root_the_daemon_recorded(
    shim_bin: Path, tmp_path: Path, conf_env: dict[str, str]
) -> None:
    """The daemon writes `<bundle>/state-root`; delete trusts it over the configuration."""
    task_id = unique_id()
    bundle = make_bundle(tmp_path, task_id)
    recorded = tmp_path / "recorded"
    (recorded / task_id / "agent").mkdir(parents=True)
    (bundle / "state-root").write_text(str(recorded))
    configured = tmp_path / "sbs" / task_id
    configured.mkdir(parents=True)
    result, _ = _delete(shim_bin, bundle, task_id, conf_env)
    assert result.returncode == 0, result.stderr
    assert not (recorded / task_id).exists()
    assert configured.exists()  # the configuration's state dir was not consulted


def test_a_recorded_pod_network_is_restored_and_a_bad_record_is_only_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kata_shim.sandbox.qemu.podnet import RECORD
    from kata_shim.shim import delete
    from kata_shim.shim.paths import NETWORK_RECORD

    assert NETWORK_RECORD == RECORD
    state = tmp_path / "sbx"
    state.mkdir()
    (state / RECORD).write_text('{"version": 1, "model": "tcfilter", "netns": ""}')
    delete._restore_pod_network(state)  # no netns: nothing to undo, the record goes
    assert not (state / RECORD).exists()
    (state / RECORD).write_text('{"version": 99}')
    delete._restore_pod_network(state)
    assert "cannot undo the pod network plumbing" in capsys.readouterr().err
