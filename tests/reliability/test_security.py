"""Shim sockets are private to our uid; ids that are not identifiers touch no path.

* The shim socket is mode 0600 (so another uid cannot even connect), and with
  the mode opened up the server still drops a peer whose SO_PEERCRED uid/gid
  differ (a child that setuid()s to nobody) without answering.
* Create/Exec with `../x`, an empty id or 200 characters → InvalidArgument, and
  no file or directory appears anywhere under the rig (bundles, state dirs).
* The binary's `delete` action with `-id ..` or `-id ../x` is refused before it
  looks at any state directory (it used to clean `<state_dir>/..`).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.devenv.shim import KataRig, write_config
from kata_shim.proto import task_pb2, ttrpc_pb2
from kata_shim.ttrpc import wire
from tests.integration.test_shim_containerd import kill_and_remove, start_sleeper, wait_status
from tests.reliability.leaks import Inventory, leaks
from tests.reliability.shimclient import bundle_dir, call, shim_socket

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOBODY = 65534
BAD_IDS = ["../x", "", "x" * 200, "..", "a/../../b"]

# Runs as nobody under Debian's python (no venv, no kata_shim): connect, send one
# Connect request, report what happened.
PEER_SCRIPT = """
import socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(3)
try:
    sock.connect(sys.argv[1])
except OSError as exc:
    print("connect-error", exc.errno); sys.exit()
try:
    sock.sendall(bytes.fromhex(sys.argv[2]))
    data = sock.recv(65536)
    print("reply" if data else "closed")
except (ConnectionResetError, BrokenPipeError):  # refused before or after our send landed
    print("closed")
except OSError as exc:
    print("error", exc)
"""


def _connect_frame(task_id: str) -> str:
    request = ttrpc_pb2.Request(
        service="containerd.task.v2.Task",
        method="Connect",
        payload=task_pb2.ConnectRequest(id=task_id).SerializeToString(),
    )
    return wire.encode_frame(1, 1, request.SerializeToString()).hex()


def _as_nobody(path: str, task_id: str) -> str:
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", PEER_SCRIPT, path, _connect_frame(task_id)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        timeout=20,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


def _tree(root: Path) -> set[str]:
    return {
        os.path.join(d, n)
        for d, dirs, files in os.walk(root)
        for n in dirs + files
        if "/opt/" not in d and "io.containerd.metadata" not in d
    }


def test_socket_is_0600_and_other_uids_are_refused(rig: KataRig, before: Inventory) -> None:
    task_id = start_sleeper(rig, "sec")
    path = shim_socket(rig, task_id)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert _as_nobody(path, task_id) == "connect-error 13"  # EACCES: the mode stops it
    os.chmod(path, 0o666)  # let nobody reach the server: now SO_PEERCRED must stop it
    try:
        assert _as_nobody(path, task_id) == "closed"
    finally:
        os.chmod(path, 0o600)
    assert call(path, "Connect", task_pb2.ConnectRequest(id=task_id)).task_pid > 0  # root still
    kill_and_remove(rig, task_id)
    assert leaks(before, rig) == []


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_invalid_argument_and_touch_nothing(rig: KataRig, bad: str) -> None:
    task_id = start_sleeper(rig, "ids")
    path = shim_socket(rig, task_id)
    bundle = str(bundle_dir(rig, task_id))
    tree = _tree(rig.work)
    with pytest.raises(errors.InvalidArgument):
        call(path, "Create", task_pb2.CreateTaskRequest(id=bad, bundle=bundle))
    with pytest.raises(errors.InvalidArgument):
        call(path, "Exec", task_pb2.ExecProcessRequest(id=task_id, exec_id=bad))
    assert _tree(rig.work) == tree
    wait_status(rig, task_id, "RUNNING", timeout=5)
    kill_and_remove(rig, task_id)


@pytest.mark.parametrize("bad", ["..", "../x", "x" * 200])
def test_delete_action_refuses_a_bad_id_before_touching_state(tmp_path: Path, bad: str) -> None:
    state = tmp_path / "state"
    (state / "sandbox").mkdir(parents=True)
    canary = tmp_path / "canary"
    canary.write_text("keep")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = write_config(tmp_path / "configuration.toml", state_dir=state)
    env = {**os.environ, "KATA_CONF_FILE": str(config)}
    argv = [sys.executable, "-m", "kata_shim.shim.main", "-namespace", "default", "-id", bad]
    result = subprocess.run(
        [*argv, "-address", "/x.sock", "delete"], cwd=bundle, env=env, capture_output=True
    )
    assert result.returncode == 1 and b"-id" in result.stderr
    assert result.stdout == b""
    assert canary.read_text() == "keep" and (state / "sandbox").is_dir()
