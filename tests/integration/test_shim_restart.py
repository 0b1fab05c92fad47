"""containerd restarts while a task runs; the task exits while containerd is down.

After the restart containerd reconnects to our shim (Connect within its 5 s load
timeout), `ctr task ls` shows STOPPED, the exit event is forwarded to the new
containerd (the publisher re-dials), and Delete reports the right exit code.
"""

from __future__ import annotations

import json
import select
import time
from collections.abc import Iterator

import pytest

from kata_shim.devenv.shim import KataRig
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def rig() -> Iterator[KataRig]:
    with KataRig() as rig:
        yield rig


def _wait_gone(rig: KataRig, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(needle in argv for _, argv in rig.leftovers()):
        assert time.monotonic() < deadline, f"{needle!r} still running"
        time.sleep(0.1)


def _exit_event(lines: list[str], task_id: str) -> dict[str, object] | None:
    for line in lines:
        if "/tasks/exit" in line and task_id in line:
            payload: dict[str, object] = json.loads(line[line.index("{") :])
            return payload
    return None


def test_exit_during_containerd_restart_is_observed(rig: KataRig) -> None:
    task_id = rig.id("restart")
    script = "sleep 3; exit 5"
    result = rig.ctr(*rig.run_args(task_id, rig.sh(script), "-d"))
    assert result.returncode == 0, _out(result)
    wait_status(rig, task_id, "RUNNING")
    shim_pid = int((rig.containerd.work / "state" / "io.containerd.runtime.v2.task" / "default"
                    / task_id / "shim.pid").read_text())  # fmt: skip

    rig.containerd.stop()
    _wait_gone(rig, script, timeout=15)  # the task exits while nobody listens
    rig.containerd.start()
    events = rig.containerd.popen_ctr("events")
    try:
        line = wait_status(rig, task_id, "STOPPED")
        assert line.split()[1] != "0"
        deadline = time.monotonic() + 30  # the publisher retries with back-off
        seen: list[str] = []
        buffer = b""
        assert events.stdout is not None
        while time.monotonic() < deadline and _exit_event(seen, task_id) is None:
            if select.select([events.stdout], [], [], 0.2)[0]:
                buffer += events.stdout.read1(65536)
                *lines, buffer = buffer.split(b"\n")
                seen += [line.decode(errors="replace") for line in lines]
    finally:
        events.terminate()
        events.communicate(timeout=10)
    event = _exit_event(seen, task_id)
    assert event is not None, f"no exit event after the restart; saw {seen}"
    assert event["exit_status"] == 5
    assert any(pid == shim_pid for pid, _ in rig.leftovers()), "the shim did not survive"
    deleted = remove(rig, task_id)
    assert "exit with non-zero exit code 5" in _out(deleted)
    assert_clean(rig)
