"""Pods through containerd's real CRI plugin, the same scenarios for `runc` (the reference)
and our shim's `kata-local` handler, in one test run.

Each scenario tears its pod down through CRI (StopContainer, RemoveContainer,
StopPodSandbox, RemovePodSandbox) and then checks that nothing is left: no
shim, agent or container process, no mount, no pod netns, no CRI object.
"""

from __future__ import annotations

import time

import pytest

from kata_shim.devenv import ociimage
from kata_shim.devenv.cri import CriRig
from kata_shim.devenv.criclient import CriClient
from kata_shim.proto import cri_pb2
from tests.cri.podkit import CHATTY, Pod, leftovers, state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HANDLERS = ["runc", "kata-local"]


def test_the_rig_serves_cri_with_our_images(cri_rig: CriRig, cri_client: CriClient) -> None:
    version = cri_client.version()
    assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
    tags = {tag for image in cri_client.list_images() for tag in image.repo_tags}
    assert {ociimage.PAUSE.name, ociimage.BUSYBOX.name} <= tags


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_container_exec_and_log(cri_rig: CriRig, cri_client: CriClient, handler: str) -> None:
    pod = Pod(cri_rig, cri_client, handler, "web")
    status = cri_client.pod_status(pod.id)
    assert status.state == cri_pb2.SANDBOX_READY
    assert status.runtime_handler == handler
    assert status.network.ip.startswith("10.88."), status
    container = pod.add("chatty", CHATTY)
    running = cri_client.wait_container_state(container, cri_pb2.CONTAINER_RUNNING)
    assert state(running.state) == "CONTAINER_RUNNING"

    done = cri_client.exec_sync(
        container, ["/bin/sh", "-c", "echo out-$((6*7)); echo oops >&2; exit 3"]
    )
    assert (done.exit_code, done.stdout, done.stderr) == (3, b"out-42\n", b"oops\n")
    assert cri_client.exec_sync(container, ["true"]).exit_code == 0

    lines = pod.wait_log("chatty", 2)
    assert sorted(lines) == [("stderr", "F", "to-stderr"), ("stdout", "F", "to-stdout")]
    assert running.log_path == str(pod.log_dir / "chatty.log")

    cri_client.stop_container(container, timeout=10)
    stopped = cri_client.container_status(container)
    assert (state(stopped.state), stopped.exit_code) == ("CONTAINER_EXITED", 0)  # TERM, trapped
    pod.teardown()
    assert leftovers(cri_rig, cri_client, [pod.id, container]) == {}


@pytest.mark.parametrize("handler", HANDLERS)
def test_container_exit_code(cri_rig: CriRig, cri_client: CriClient, handler: str) -> None:
    pod = Pod(cri_rig, cri_client, handler, "exiter")
    container = pod.add("seven", "echo bye; exit 7")
    status = cri_client.wait_container_state(container, cri_pb2.CONTAINER_EXITED)
    assert (state(status.state), status.exit_code, status.reason) == (
        "CONTAINER_EXITED",
        7,
        "Error",
    )
    assert status.started_at > 0 and status.finished_at > 0
    assert pod.wait_log("seven", 1) == [("stdout", "F", "bye")]
    pod.teardown()
    assert leftovers(cri_rig, cri_client, [pod.id, container]) == {}


@pytest.mark.parametrize("handler", HANDLERS)
def test_two_containers_then_pod_stop_without_container_stop(
    cri_rig: CriRig, cri_client: CriClient, handler: str
) -> None:
    """StopPodSandbox stops running containers itself; RemovePodSandbox removes them."""
    pod = Pod(cri_rig, cri_client, handler, "pair")
    first = pod.add("one", CHATTY)
    second = pod.add("two", CHATTY)
    for container in (first, second):
        assert cri_client.wait_container_state(container, cri_pb2.CONTAINER_RUNNING).state == (
            cri_pb2.CONTAINER_RUNNING
        )
    assert {c.id for c in cri_client.list_containers(pod.id)} == {first, second}
    cri_client.stop_pod(pod.id)
    assert cri_client.pod_status(pod.id).state == cri_pb2.SANDBOX_NOTREADY
    for container in (first, second):
        assert state(cri_client.container_status(container).state) == "CONTAINER_EXITED"
    cri_client.remove_pod(pod.id)
    assert leftovers(cri_rig, cri_client, [pod.id, first, second]) == {}


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_ip_serves_the_rig_netns(cri_rig: CriRig, cri_client: CriClient, handler: str) -> None:
    """CNI gave the pod an IP on the bridge in the rig's namespace, and a client there reaches
    a server in the pod (busybox httpd). The container is in the pod's netns (its only
    interfaces: lo and eth0 with the pod IP; not the rig's `cni0`) and has the pod's hostname."""
    pod = Pod(cri_rig, cri_client, handler, "httpd")
    ip = cri_client.pod_status(pod.id).network.ip
    script = "mkdir /www; echo served-by-pod > /www/index.html; exec httpd -f -p 8080 -h /www"
    container = pod.add("web", script)
    assert cri_client.wait_container_state(container, cri_pb2.CONTAINER_RUNNING).state == (
        cri_pb2.CONTAINER_RUNNING
    )
    # busybox 1.35's `wget -T` crashes: bound it with `timeout` instead; retry while httpd starts
    for _ in range(20):
        got = cri_rig.in_netns("timeout", "5", "busybox", "wget", "-q", "-O-", f"http://{ip}:8080/")
        if got.returncode == 0:
            break
        time.sleep(0.25)
    assert (got.returncode, got.stdout) == (0, "served-by-pod\n"), got.stderr
    links = cri_client.exec_sync(container, ["/bin/ip", "-o", "link"]).stdout.decode()
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    assert names == {"lo", "eth0"}, links
    addr = cri_client.exec_sync(container, ["/bin/ip", "-o", "-4", "addr", "show", "eth0"])
    assert f" {ip}/" in addr.stdout.decode(), addr
    hostname = cri_client.exec_sync(container, ["/bin/hostname"]).stdout.decode()
    assert hostname == f"{pod.config.hostname}\n"
    pod.teardown()
    assert leftovers(cri_rig, cri_client, [pod.id, container]) == {}
