"""Pod namespaces through containerd's real CRI plugin, the `kata` handler (a QEMU VM under TCG)
against the `runc` handler (the reference) in the same run.

* IPC: a SysV shared memory segment made in container 1 is visible in container 2 —
  busybox `syslogd -C` logs into a SysV shm ring buffer (and a semaphore set) that
  `logread` reads by key, so `logread` in container 2 shows what container 1 logged
  only when both share one IPC namespace; /proc/sysvipc/shm lists it in both.
* UTS: both containers see the pod hostname, from the same UTS namespace.
* PID: with `namespace_options.pid = POD` container 2 sees container 1's process (and
  the pause process as PID 1); with CONTAINER its own shell is PID 1 and it sees no
  other container's process.
* /dev/shm is one per pod; /etc/hosts, /etc/resolv.conf and /etc/hostname are CRI's
  files from the sandbox directory, the same in every container, and an in-place
  update of /etc/hosts on the host shows in the containers.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv import ociimage
from kata_shim.devenv.cri import CriRig
from kata_shim.devenv.criclient import CriClient, container_config
from kata_shim.proto import cri_pb2
from tests.cri.conftest import check_tools
from tests.cri.podkit import Pod, leftovers

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

HANDLERS = ["runc", "kata"]
SHM_KEY = 0x414E4547  # busybox syslogd's SysV IPC key for its shared memory log buffer
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


@pytest.fixture(scope="module")
def ns_rig(guest_image: Path) -> Iterator[CriRig]:
    check_tools()
    with CriRig(prefix="podns", guest_image=guest_image) as rig:
        yield rig


@pytest.fixture(scope="module")
def ns_client(ns_rig: CriRig) -> Iterator[CriClient]:
    with CriClient(ns_rig.cri_address) as client:
        yield client


def add(pod: Pod, name: str, script: str, pid_mode: int) -> str:
    """Create and start a busybox container of `pod` with `namespace_options.pid = pid_mode`
    (what the kubelet sets from the pod's shareProcessNamespace)."""
    config = container_config(name, ociimage.BUSYBOX.name, ["/bin/sh", "-c", script])
    config.linux.security_context.namespace_options.pid = pid_mode
    container_id = pod.client.create_container(pod.id, config, pod.config)
    pod.containers.append(container_id)
    pod.client.start_container(container_id)
    state = pod.client.wait_container_state(container_id, cri_pb2.CONTAINER_RUNNING)
    assert state.state == cri_pb2.CONTAINER_RUNNING, state
    return container_id


def sh(client: CriClient, container_id: str, script: str) -> str:
    done = client.exec_sync(container_id, ["/bin/sh", "-c", script], timeout=60)
    assert done.exit_code == 0, (script, done)
    return str(done.stdout.decode())


def log_until_seen(client: CriClient, container_id: str, token: str) -> str:
    """`logger token` in the container until its own `logread` shows it (syslogd starts)."""
    deadline = time.monotonic() + 60
    while True:
        out = client.exec_sync(
            container_id, ["/bin/sh", "-c", f"logger {token}; logread"], timeout=60
        )
        if token in out.stdout.decode() or time.monotonic() > deadline:
            return str(out.stdout.decode())
        time.sleep(0.5)


def sandbox_files(rig: CriRig, pod_id: str) -> Path:
    """The CRI plugin's per-sandbox directory (hosts, resolv.conf, hostname)."""
    return rig.containerd.work / "root" / "io.containerd.grpc.v1.cri" / "sandboxes" / pod_id


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_shares_ipc_uts_and_pid_on_request(
    ns_rig: CriRig, ns_client: CriClient, handler: str
) -> None:
    token = f"podns-{secrets.token_hex(4)}"
    pod = Pod(ns_rig, ns_client, handler, "podns")
    hostname = pod.config.hostname
    # container 1 logs into a SysV shm ring buffer; its argv carries a token `ps` can find
    maker = add(pod, "maker", f": {token}-maker; syslogd -n -C64 & {LOOP}", cri_pb2.POD)
    shared = add(pod, "shared", LOOP, cri_pb2.POD)
    own = add(pod, "own", LOOP, cri_pb2.CONTAINER)

    assert token in log_until_seen(ns_client, maker, token)
    for reader in (shared, own):  # IPC is the pod's, whatever the PID mode
        assert token in sh(ns_client, reader, "logread"), reader
        segments = sh(ns_client, reader, "cat /proc/sysvipc/shm").splitlines()[1:]
        assert [int(line.split()[0]) for line in segments] == [SHM_KEY], segments

    links = {}
    for cid in (maker, shared, own):
        out = sh(ns_client, cid, "hostname; readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts")
        name, *namespaces = out.split()
        assert name == hostname, (cid, out)
        links[cid] = namespaces
    assert links[maker] == links[shared] == links[own]

    # PID = POD: PID 1 is the pause process, container 1's shell is there
    pod_ps = sh(ns_client, shared, "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o pid,args")
    first, *processes = pod_ps.splitlines()
    assert ociimage.PAUSE_SCRIPT in first, pod_ps
    assert any(f"{token}-maker" in line for line in processes), pod_ps
    # PID = CONTAINER: its own shell is PID 1, no other container's process
    own_ps = sh(ns_client, own, "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o pid,args")
    first, *processes = own_ps.splitlines()
    assert LOOP in first and ociimage.PAUSE_SCRIPT not in own_ps, own_ps
    assert not any(token in line for line in processes), own_ps

    pod.teardown()
    assert leftovers(ns_rig, ns_client, [pod.id, maker, shared, own], timeout=30) == {}


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_dev_shm_and_etc_files(ns_rig: CriRig, ns_client: CriClient, handler: str) -> None:
    pod = Pod(ns_rig, ns_client, handler, "podns-etc")
    first = add(pod, "first", LOOP, cri_pb2.CONTAINER)
    second = add(pod, "second", LOOP, cri_pb2.CONTAINER)
    sh(ns_client, first, "echo pod-shm > /dev/shm/podns")
    assert sh(ns_client, second, "cat /dev/shm/podns") == "pod-shm\n"

    files = sandbox_files(ns_rig, pod.id)
    wanted = {name: (files / name).read_text() for name in ("hosts", "resolv.conf", "hostname")}
    assert wanted["hostname"] == pod.config.hostname + "\n"
    for cid in (first, second):
        for name, text in wanted.items():
            assert sh(ns_client, cid, f"cat /etc/{name}") == text, (cid, name)

    # an in-place update of the sandbox's hosts file reaches every container
    extra = f"10.88.254.254 podns-{secrets.token_hex(3)}\n"
    with open(files / "hosts", "a") as hosts:
        hosts.write(extra)
    for cid in (first, second):
        deadline = time.monotonic() + 30
        while extra not in (seen := sh(ns_client, cid, "cat /etc/hosts")):
            assert time.monotonic() < deadline, (cid, seen)
            time.sleep(0.5)

    pod.teardown()
    assert leftovers(ns_rig, ns_client, [pod.id, first, second], timeout=30) == {}
