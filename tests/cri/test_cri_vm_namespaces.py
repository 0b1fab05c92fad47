"""Pod namespaces through containerd's real CRI plugin: the `kata` handler (a QEMU VM under
TCG) and `kata-local` (the agent on the host) against `runc` (the reference) in the same run.

* IPC: a SysV shared memory segment made in container 1 is visible in container 2 —
  busybox `syslogd -C` logs into a SysV shm ring buffer (and a semaphore set) that
  `logread` reads by key, so `logread` in container 2 shows what container 1 logged
  only when both share one IPC namespace; /proc/sysvipc/shm lists it in both.
* UTS: both containers see the pod hostname, from the same UTS namespace.
* PID: with `namespace_options.pid = POD` container 2 sees container 1's process (and
  the pause process as PID 1); with CONTAINER its own shell is PID 1 and it sees no
  other container's process.
* The host stays out of it: no container is in the test's (the host's) IPC, UTS or
  PID namespace, the host's hostname is unchanged, and for the handlers whose
  containers run on the host (`runc`, `kata-local`) the host's /proc shows the
  container's processes in the namespaces the container reported.
* /dev/shm is one per pod (and not the host's); /etc/hosts, /etc/resolv.conf and
  /etc/hostname are CRI's files from the sandbox directory, the same in every
  container, and an in-place update of /etc/hosts on the host shows in the containers.
"""

from __future__ import annotations

import os
import secrets
import socket
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

HANDLERS = ["runc", "kata", "kata-local"]
ON_HOST = ("runc", "kata-local")  # handlers whose containers are host processes
SHM_KEY = 0x414E4547  # busybox syslogd's SysV IPC key for its shared memory log buffer
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
NAME_AND_LINKS = "hostname; for n in ipc uts pid; do readlink /proc/self/ns/$n; done"


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


def host_namespaces() -> list[str]:
    """The test process's (the host's) ipc, uts and pid namespace links."""
    return [os.readlink(f"/proc/self/ns/{kind}") for kind in ("ipc", "uts", "pid")]


def host_pids_of(token: str) -> list[int]:
    """Host processes whose argv carries `token` (a container's, when it runs on the host)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if token.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                found.append(int(name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def check_host_view(token: str, container_links: list[str]) -> None:
    """The host's /proc shows the container's process in the namespaces it reported."""
    pids = host_pids_of(f"{token}-maker")
    assert pids, token
    for pid in pids:
        seen = [os.readlink(f"/proc/{pid}/ns/{kind}") for kind in ("ipc", "uts", "pid")]
        assert seen == container_links, (pid, seen, container_links)


def sandbox_files(rig: CriRig, pod_id: str) -> Path:
    """The CRI plugin's per-sandbox directory (hosts, resolv.conf, hostname)."""
    return rig.containerd.work / "root" / "io.containerd.grpc.v1.cri" / "sandboxes" / pod_id


def check_links(client: CriClient, handler: str, pod: Pod, token: str) -> None:
    """IPC and UTS are the pod's in every container, PID the pod's for `pid = POD` only; none
    is the host's (and the host's /proc agrees, where containers are host processes)."""
    host_links = host_namespaces()
    maker, shared, own = pod.containers
    links = {}
    for cid in (maker, shared, own):
        out = sh(client, cid, NAME_AND_LINKS)
        name, *namespaces = out.split()
        assert name == pod.config.hostname, (cid, out)
        assert not set(namespaces) & set(host_links), (cid, namespaces, host_links)
        links[cid] = namespaces
    assert links[maker][:2] == links[shared][:2] == links[own][:2]  # IPC, UTS: the pod's
    assert links[maker][2] == links[shared][2] != links[own][2]  # PID: POD vs CONTAINER
    if handler in ON_HOST:
        check_host_view(token, links[maker])
    print(f"{handler}: [ipc, uts, pid] of maker/shared/own {list(links.values())}")
    print(f"host: {host_links}")


def check_pid_views(client: CriClient, pod: Pod, token: str) -> None:
    """PID = POD: PID 1 is the pause process, container 1's shell is there; PID = CONTAINER:
    its own shell is PID 1, no other container's process."""
    _, shared, own = pod.containers
    pod_ps = sh(client, shared, "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o pid,args")
    first, *processes = pod_ps.splitlines()
    assert ociimage.PAUSE_SCRIPT in first, pod_ps
    assert any(f"{token}-maker" in line for line in processes), pod_ps
    own_ps = sh(client, own, "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o pid,args")
    first, *processes = own_ps.splitlines()
    assert LOOP in first and ociimage.PAUSE_SCRIPT not in own_ps, own_ps
    assert not any(token in line for line in processes), own_ps


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_shares_ipc_uts_and_pid_on_request(
    ns_rig: CriRig, ns_client: CriClient, handler: str
) -> None:
    token = f"podns-{secrets.token_hex(4)}"
    host_name = socket.gethostname()
    pod = Pod(ns_rig, ns_client, handler, "podns")
    try:
        # container 1 logs into a SysV shm ring buffer; its argv carries a token `ps` can find
        maker = add(pod, "maker", f": {token}-maker; syslogd -n -C64 & {LOOP}", cri_pb2.POD)
        shared = add(pod, "shared", LOOP, cri_pb2.POD)
        own = add(pod, "own", LOOP, cri_pb2.CONTAINER)
        assert token in log_until_seen(ns_client, maker, token)
        for reader in (shared, own):  # IPC is the pod's, whatever the PID mode
            assert token in sh(ns_client, reader, "logread"), reader
            segments = sh(ns_client, reader, "cat /proc/sysvipc/shm").splitlines()[1:]
            assert [int(line.split()[0]) for line in segments] == [SHM_KEY], segments
        check_links(ns_client, handler, pod, token)
        check_pid_views(ns_client, pod, token)
        assert socket.gethostname() == host_name  # the pod's hostname never reached the host
    except BaseException:
        pod.teardown_quietly()  # a failed scenario must not leave its pod to the next one
        raise
    pod.teardown()
    assert leftovers(ns_rig, ns_client, [pod.id, *pod.containers], timeout=30) == {}


def check_etc_files(rig: CriRig, client: CriClient, pod: Pod) -> None:
    """CRI's hosts, resolv.conf and hostname in every container; an in-place update of the
    sandbox's hosts file reaches them all."""
    files = sandbox_files(rig, pod.id)
    wanted = {name: (files / name).read_text() for name in ("hosts", "resolv.conf", "hostname")}
    assert wanted["hostname"] == pod.config.hostname + "\n"
    for cid in pod.containers:
        for name, text in wanted.items():
            assert sh(client, cid, f"cat /etc/{name}") == text, (cid, name)
    extra = f"10.88.254.254 podns-{secrets.token_hex(3)}\n"
    with open(files / "hosts", "a") as hosts:
        hosts.write(extra)
    for cid in pod.containers:
        deadline = time.monotonic() + 30
        while extra not in (seen := sh(client, cid, "cat /etc/hosts")):
            assert time.monotonic() < deadline, (cid, seen)
            time.sleep(0.5)


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_dev_shm_and_etc_files(ns_rig: CriRig, ns_client: CriClient, handler: str) -> None:
    pod = Pod(ns_rig, ns_client, handler, "podns-etc")
    try:
        first = add(pod, "first", LOOP, cri_pb2.CONTAINER)
        second = add(pod, "second", LOOP, cri_pb2.CONTAINER)
        shm_file = f"podns-{secrets.token_hex(4)}"
        sh(ns_client, first, f"echo pod-shm > /dev/shm/{shm_file}")
        assert sh(ns_client, second, f"cat /dev/shm/{shm_file}") == "pod-shm\n"
        assert not (Path("/dev/shm") / shm_file).exists()  # the pod's, not the host's
        check_etc_files(ns_rig, ns_client, pod)
    except BaseException:
        pod.teardown_quietly()
        raise
    pod.teardown()
    assert leftovers(ns_rig, ns_client, [pod.id, *pod.containers], timeout=30) == {}
