"""The shim's own log on a full disk (iSulad's layout: `<bundle>/log` is a regular file).

`<bundle>/log` points into a 1 MiB tmpfs that is already full, the shim runs
with -debug (a log line for nearly everything it does), and a whole task
lifecycle is driven over its socket the way lib-shim-v2 does it (start action
without -address, Create, Start, Wait, Delete, Shutdown, delete action).
Every call must succeed, the exit status must arrive, and afterwards no
process, socket, mount or state dir of the test may be left.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.shim import processes_matching, write_config
from kata_shim.devenv.specs import container_spec
from kata_shim.proto import task_pb2
from kata_shim.shim.paths import socket_path
from tests.reliability.shimclient import call
from tests.reliability.test_faults import _full_tmpfs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with _full_tmpfs(tmp_path / "disk") as path:
        yield path


def _shim(bundle: Path, env: dict[str, str], task_id: str, action: str) -> bytes:
    argv = [sys.executable, "-m", "kata_shim.shim.main", "-namespace", "isula", "-id", task_id]
    result = subprocess.run(
        [*argv, "-debug", action], cwd=bundle, env=env, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def test_full_disk_under_a_regular_file_log(tmp_path: Path, disk: Path) -> None:
    task_id = f"ks{os.getpid()}{secrets.token_hex(3)}-logfull"
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(container_spec(["/bin/sh", "-c", "exit 4"])))
    (disk / "shim.log").touch()  # an inode still fits; no data block does
    (bundle / "log").symlink_to(disk / "shim.log")
    state = tmp_path / "sbs"
    config = write_config(tmp_path / "configuration.toml", state_dir=state, debug=True)
    env = {k: v for k, v in os.environ.items() if k != "TTRPC_ADDRESS"}
    env["KATA_CONF_FILE"] = str(config)
    with pytest.raises(OSError):  # the disk really is full
        (disk / "probe").write_bytes(b"x" * 8192)

    address = _shim(bundle, env, task_id, "start").decode()
    path = socket_path(address)
    assert path is not None and os.path.exists(path)
    try:
        call(path, "Create", task_pb2.CreateTaskRequest(id=task_id, bundle=str(bundle)))
        call(path, "Start", task_pb2.StartRequest(id=task_id))
        assert call(path, "Wait", task_pb2.WaitRequest(id=task_id)).exit_status == 4
        assert call(path, "Delete", task_pb2.DeleteRequest(id=task_id)).exit_status == 4
        call(path, "Shutdown", task_pb2.ShutdownRequest(id=task_id))
    finally:
        _shim(bundle, env, task_id, "delete")
    deadline = time.monotonic() + 10
    while processes_matching(task_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_matching(task_id) == []
    assert not os.path.exists(path)
    assert not state.exists() or os.listdir(state) == []
    mounted = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if task_id in ln]
    assert mounted == []
    assert os.path.getsize(disk / "shim.log") < 1 << 20
