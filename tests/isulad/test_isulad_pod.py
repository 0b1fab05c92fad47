"""A pod under iSulad: a sandbox container and two containers in one shim and one sandbox.

Both annotation dialects iSulad produces: the dockershim keys of
`isula run --annotation io.kubernetes.docker.type=podsandbox|container
--annotation io.kubernetes.sandbox.id=<sandbox>`, and the CRI keys its CRI
service writes. Each container is launched with its own `start` (iSulad has no
task address for it); `start` answers with the sandbox shim's address. The
sandbox's exit is reported only after its containers'.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.isulad.isulad import Container
from tests.isulad.rig import CRI_SANDBOX, CRI_TYPE, DOCKER_SANDBOX, DOCKER_TYPE, IsuladRig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def pod_annotations(dialect: str, sandbox: str, role: str) -> dict[str, str]:
    if dialect == "dockershim":
        kind = "podsandbox" if role == "sandbox" else "container"
        return {DOCKER_TYPE: kind, DOCKER_SANDBOX: sandbox}
    return {CRI_TYPE: role, CRI_SANDBOX: sandbox}


def run_pod(rig: IsuladRig, dialect: str) -> tuple[str, list[str]]:
    sandbox = rig.id("sb")
    apps = [rig.id("app1"), rig.id("app2")]
    rig.isulad.create(sandbox, rig.spec("sleep 600", pod_annotations(dialect, sandbox, "sandbox")))
    rig.isulad.start(sandbox)
    for app in apps:
        spec = rig.spec("sleep 600", pod_annotations(dialect, sandbox, "container"))
        rig.isulad.create(app, spec)
        rig.isulad.start(app)
    return sandbox, apps


def exit_order(log: str) -> list[str]:
    """Container ids in the order their init's /tasks/exit was posted (execs left out)."""
    found = []
    for line in log.splitlines():
        if "post event /tasks/exit" not in line:
            continue
        container = re.search(r'container_id: "([^"]+)"', line)
        process = re.search(r' id: "([^"]+)"', line)
        if container and process and container.group(1) == process.group(1):
            found.append(container.group(1))
    return found


def assert_one_shim(rig: IsuladRig, sandbox: Container, apps: list[Container]) -> None:
    shims = rig.shims()
    assert len(shims) == 1 and f"-id {sandbox.id}" in shims[0][1], shims
    assert [p.name for p in rig.state_dir.iterdir()] == [sandbox.id]  # one sandbox
    address = (sandbox.bundle / "address").read_text()
    for app in apps:
        assert app.start_stdout.decode() == address
        assert (app.bundle / "address").read_text() == address
        assert not (app.bundle / "shim.pid").exists()
        assert app.pid == sandbox.pid  # one sandbox: every task reports its pid


@pytest.mark.parametrize("dialect", ["dockershim", "cri"])
def test_sandbox_exit_comes_after_its_containers(rig: IsuladRig, dialect: str) -> None:
    sandbox_id, app_ids = run_pod(rig, dialect)
    isulad = rig.isulad
    sandbox = isulad.containers[sandbox_id]
    apps = [isulad.containers[a] for a in app_ids]
    assert_one_shim(rig, sandbox, apps)
    code, out, _ = isulad.exec(app_ids[0], "e1", rig.sh("echo in-pod"))
    assert (code, out) == (0, "in-pod\n")

    isulad.kill(sandbox_id, signal.SIGKILL)
    for container in (*apps, sandbox):
        assert container.exit_fifo is not None
        assert container.exit_fifo.wait(30) == 137, container.id
    order = exit_order((sandbox.bundle / "log").read_text())
    assert order[-1] == sandbox_id and sorted(order[:-1]) == sorted(app_ids), order
    for container in (*apps, sandbox):
        assert container.cleaned.wait(30), container.id
        assert isulad.outcomes("delete", container.id) == ["ok"]
        assert isulad.outcomes("shutdown", container.id) == ["ok"]
    for cid in (*app_ids, sandbox_id):
        isulad.rm(cid)
    rig.assert_clean()


def test_containers_stopped_first_then_the_sandbox(rig: IsuladRig) -> None:
    """CRI's StopPodSandbox order: the shim keeps serving until the sandbox's Shutdown.
    A third container comes the sandbox-API way: iSulad knows the task address, no `start`."""
    sandbox_id, app_ids = run_pod(rig, "cri")
    isulad = rig.isulad
    shim = rig.shims()[0][0]
    sandbox = isulad.containers[sandbox_id]
    third = rig.id("app3")
    spec = rig.spec("echo from-third; sleep 600", pod_annotations("cri", sandbox_id, "container"))
    address = (sandbox.bundle / "address").read_text()
    isulad.create(third, spec, task_address=address)
    isulad.start(third)
    app_ids.append(third)
    output = isulad.containers[third].outputs["out"]
    deadline = time.monotonic() + 10
    while b"from-third" not in output.data:
        assert time.monotonic() < deadline, bytes(output.data)
        time.sleep(0.05)
    assert [pid for pid, _ in rig.shims()] == [shim]
    for app in app_ids:
        assert isulad.stop(app, timeout=1) == 137
        assert isulad.containers[app].cleaned.wait(30)
        isulad.rm(app)
    assert [pid for pid, _ in rig.shims()] == [shim]  # still serving the sandbox
    assert isulad.state(sandbox_id).status == "running"
    assert isulad.stop(sandbox_id, timeout=1) == 137
    assert isulad.containers[sandbox_id].cleaned.wait(30)
    isulad.rm(sandbox_id)
    rig.assert_clean()


def test_sandbox_removed_before_its_containers_are_cleaned(rig: IsuladRig) -> None:
    """`isula rm` of the sandbox can come before the containers' cleanup: the daemon's bundle
    (its cwd, `address`, `log`) is gone when the last Shutdown arrives; nothing may leak."""
    isulad = rig.new_isulad()
    isulad.auto_clean = False
    rig.isulad = isulad
    sandbox_id, app_ids = run_pod(rig, "dockershim")
    isulad.kill(sandbox_id, signal.SIGKILL)
    for cid in (*app_ids, sandbox_id):
        fifo = isulad.containers[cid].exit_fifo
        assert fifo is not None and fifo.wait(30) == 137
    isulad.clean(sandbox_id)
    isulad.rm(sandbox_id)
    assert len(rig.shims()) == 1  # still serving the two containers
    for cid in app_ids:
        isulad.clean(cid)
        assert isulad.outcomes("delete", cid) == ["ok"], isulad.calls
        isulad.rm(cid)
    rig.assert_clean()
