"""Issue 16's must-show 1, 4 and 7 through containerd's real CRI plugin: the `kata` handler
(a QEMU VM under TCG) and `kata-local` (the agent on the host) against `runc` (the
reference) in the same run.

One pod per handler (one VM boot for `kata`) carries every scenario in turn:
  * must-show 4: the container's stdout and stderr lines reach the log file CRI
    writes (`log_directory`/`log_path`), in CRI log format
    (`<RFC 3339 nano> stdout|stderr F <line>`);
  * must-show 1: busybox httpd in container 1 serves a file on the pod IP, fetched
    from the rig's netns (where the test's client lives), and container 2 of the
    same pod fetches it over 127.0.0.1 (`lo` is up in the pod's network namespace);
  * must-show 7: a container that exits by itself (`exit 7`) shows exitCode 7
    in ContainerStatus;
  * must-show 7, the sandbox dies: SIGKILL the pod's QEMU (`kata`; the shim's child)
    or its local agent (`kata-local`, whose containers then die with it as a VM's
    do: the shim kills and deletes them); its running containers show EXITED with
    exit code 255, the sandbox NOTREADY, and the container that had exited keeps its
    7; for `kata-local` no process of those containers is left on the host. (runc
    has no VM: killing its pause process ends no container, so there is no
    reference to compare.)
Then Stop/RemoveContainer, StopPodSandbox, RemovePodSandbox leave nothing behind.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.cri import CriRig
from kata_shim.devenv.criclient import CriClient
from kata_shim.proto import cri_pb2
from tests.cri.conftest import check_tools
from tests.cri.podkit import LOG_LINE, Pod, leftovers, processes_in, state

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

HANDLERS = ["runc", "kata", "kata-local"]
PAGE = "served-by-pod"
# prints one line on each stream, then serves PAGE on port 8080 until TERM
WEB = (
    "echo out-line; echo err-line >&2; mkdir -p /www; "
    f"echo {PAGE} > /www/index.html; exec httpd -f -p 8080 -h /www"
)
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
# busybox 1.35's `wget -T` crashes: bound each try with `timeout` instead
FETCH = ("timeout", "5", "busybox", "wget", "-q", "-O-")


@pytest.fixture(scope="module")
def scen_rig(guest_image: Path) -> Iterator[CriRig]:
    check_tools()
    with CriRig(prefix="vmscen", guest_image=guest_image) as rig:
        yield rig


@pytest.fixture(scope="module")
def scen_client(scen_rig: CriRig) -> Iterator[CriClient]:
    with CriClient(scen_rig.cri_address) as client:
        yield client


def running(client: CriClient, container_id: str) -> None:
    status = client.wait_container_state(container_id, cri_pb2.CONTAINER_RUNNING, timeout=120)
    assert state(status.state) == "CONTAINER_RUNNING", status


def retry(fetch: Callable[[], tuple[int, str]], attempts: int = 40) -> tuple[int, str]:
    """Call `fetch` (returns (exit code, body)) until it succeeds while httpd starts."""
    for _ in range(attempts):
        code, body = fetch()
        if code == 0:
            break
        time.sleep(0.5)
    return code, body


def check_log(pod: Pod) -> None:
    """Must-show 4: both lines, each a CRI log line naming its stream, in the file CRI writes."""
    lines = pod.wait_log("web", 2, timeout=90)
    assert sorted(lines) == [("stderr", "F", "err-line"), ("stdout", "F", "out-line")], lines
    raw = (pod.log_dir / "web.log").read_text().splitlines()
    assert len(raw) == 2 and all(LOG_LINE.match(line) for line in raw), raw


def check_http(rig: CriRig, client: CriClient, pod: Pod, ip: str) -> str:
    """Must-show 1: the pod IP serves PAGE in the rig's netns; container 2 gets it over lo."""

    def from_rig_netns() -> tuple[int, str]:
        got = rig.in_netns(*FETCH, f"http://{ip}:8080/")
        return got.returncode, got.stdout

    assert retry(from_rig_netns) == (0, f"{PAGE}\n")
    second = pod.add("second", LOOP)
    running(client, second)

    def over_loopback() -> tuple[int, str]:
        got = client.exec_sync(second, [*FETCH[2:], "http://127.0.0.1:8080/"], timeout=20)
        return got.exit_code, got.stdout.decode()

    assert retry(over_loopback, attempts=10) == (0, f"{PAGE}\n")
    return second


def check_exit_7(client: CriClient, pod: Pod) -> str:
    """Must-show 7: a container's own exit code reaches ContainerStatus."""
    seven = pod.add("seven", "echo bye; exit 7")
    status = client.wait_container_state(seven, cri_pb2.CONTAINER_EXITED, timeout=120)
    assert (state(status.state), status.exit_code, status.reason) == (
        "CONTAINER_EXITED",
        7,
        "Error",
    ), status
    # containerd 1.6 stamps started_at when Start returns, finished_at from the exit
    # event: a container this quick can finish "before" it started, so compare to created_at
    assert status.started_at > 0 and status.finished_at >= status.created_at > 0, status
    assert pod.wait_log("seven", 1) == [("stdout", "F", "bye")]
    return seven


def pod_qemu(rig: CriRig, pod_id: str) -> int:
    """The PID of the pod's QEMU: a qemu-system process whose parent, the shim, names `pod_id`."""
    qemus = [
        pid
        for pid, argv in rig.leftovers()
        if "qemu-system" in argv and pod_id in argv_of(parent_pid(pid))
    ]
    assert len(qemus) == 1, rig.leftovers()
    return qemus[0]


def pod_agent(rig: CriRig, pod_id: str) -> int:
    """The PID of the pod's local agent (`kata-local`): the guest agent's module, on the host,
    named with the pod's sandbox id."""
    agents = [
        pid
        for pid, argv in rig.leftovers()
        if "kata_shim.guest.main" in argv and f"--sandbox-id {pod_id}" in argv
    ]
    assert len(agents) == 1, rig.leftovers()
    return agents[0]


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def argv_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def check_sandbox_killed(
    client: CriClient, rig: CriRig, pod: Pod, alive: list[str], exited: str
) -> None:
    """Must-show 7: SIGKILL the VM (or the local agent): its running containers exit 255, the
    sandbox is NOTREADY; the container that had exited before keeps its own exit code."""
    if pod.handler == "kata":
        os.kill(pod_qemu(rig, pod.id), signal.SIGKILL)
    else:
        assert processes_in(alive), "the containers' processes run on the host"
        os.kill(pod_agent(rig, pod.id), signal.SIGKILL)
    for container_id in alive:
        status = client.wait_container_state(container_id, cri_pb2.CONTAINER_EXITED, timeout=60)
        assert (state(status.state), status.exit_code) == ("CONTAINER_EXITED", 255), status
    sandbox = client.wait_pod_state(pod.id, cri_pb2.SANDBOX_NOTREADY, timeout=60)
    assert cri_pb2.PodSandboxState.Name(sandbox.state) == "SANDBOX_NOTREADY", sandbox
    assert client.container_status(exited).exit_code == 7
    if pod.handler == "kata-local":  # they died with their agent, as with a VM
        deadline = time.monotonic() + 30
        while (left := processes_in(alive)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == [], left


@pytest.mark.parametrize("handler", HANDLERS)
def test_log_loopback_exit_codes_and_killed_sandbox(
    scen_rig: CriRig, scen_client: CriClient, handler: str
) -> None:
    pod = Pod(scen_rig, scen_client, handler, "vmscen")
    try:
        status = scen_client.pod_status(pod.id)
        assert (status.state, status.runtime_handler) == (cri_pb2.SANDBOX_READY, handler)
        web = pod.add("web", WEB)
        running(scen_client, web)
        check_log(pod)
        second = check_http(scen_rig, scen_client, pod, status.network.ip)
        seven = check_exit_7(scen_client, pod)
        if handler != "runc":
            check_sandbox_killed(scen_client, scen_rig, pod, [web, second], seven)
    except BaseException:
        pod.teardown_quietly()  # a failed scenario must not leave its pod to the next one
        raise
    pod.teardown()
    assert leftovers(scen_rig, scen_client, [pod.id, *pod.containers], timeout=30) == {}
