"""The local sandbox keeps the pod's network namespace and hostname (issues 15 and 16).

A private containerd and our shim with the `local` backend; a CNI pod netns in a "host"
netns the test makes (kata_shim.devenv.cni, prefix `sizing-`). A pod of two containers
(CRI annotations): the sandbox container carries the netns path and the pod hostname;
the second runs busybox httpd. The test's host netns fetches the file from the pod IP; in
the container `ip link` lists the pod netns's interfaces (not the host's) and `hostname`
is the pod's. Teardown leaves the pod netns as CNI made it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.cni import CniHost
from kata_shim.devenv.shim import KataRig
from tests.integration.test_shim_containerd import _out, assert_clean, remove, wait_status
from tests.network.conftest import Pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"
HOSTNAME = "sizing-pod"
SERVE = "cd /dev/shm && mkdir -p www && echo local-served > www/f && exec httpd -f -p 8080 -h www"


@pytest.fixture
def net_pod() -> Iterator[Pod]:
    with CniHost(prefix="sizing-") as host:
        netns = host.new_pod("pod")
        yield Pod(host, netns, host.attach(netns, host.network(0)))


@pytest.fixture
def rig() -> Iterator[KataRig]:
    with KataRig(prefix="sizing-") as rig:
        yield rig


def _run(rig: KataRig, task: str, script: str, annotations: dict[str, str], **spec: str) -> None:
    path = rig.spec_file(task, rig.sh(script), annotations=annotations)
    data = json.loads(path.read_text())
    if "netns" in spec:
        data["linux"]["namespaces"].append({"type": "network", "path": spec["netns"]})
    data.pop("hostname", None)  # as CRI: only the sandbox container names the pod's hostname
    if "hostname" in spec:
        data["hostname"] = spec["hostname"]
    path.write_text(json.dumps(data))
    result = rig.ctr(*rig.run_spec_args(task, path, "-d"))
    assert result.returncode == 0, _out(result) + rig.containerd.log_tail()
    wait_status(rig, task, "RUNNING")


def _exec(rig: KataRig, task: str, exec_id: str, script: str) -> str:
    done = rig.ctr("task", "exec", "--exec-id", exec_id, task, *rig.sh(script))
    assert done.returncode == 0, _out(done)
    return done.stdout.decode()


def _link_names(ip_o_link: str) -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in ip_o_link.splitlines()}


def test_local_pod_serves_http_from_the_pod_netns_with_the_pod_hostname(
    rig: KataRig, net_pod: Pod
) -> None:
    before = net_pod.snapshot()
    pod_ip = net_pod.eth0.ips[0].split("/")[0]
    sandbox, web = rig.id("sandbox"), rig.id("web")
    pod = {CRI_TYPE: "sandbox", CRI_SANDBOX: sandbox}
    _run(rig, sandbox, "sleep 600", pod, netns=str(net_pod.netns), hostname=HOSTNAME)
    _run(rig, web, SERVE, {CRI_TYPE: "container", CRI_SANDBOX: sandbox})

    assert net_pod.http_get(f"http://{pod_ip}:8080/f") == "local-served\n"
    links = _exec(rig, web, "links", "ip -o link")
    assert _link_names(links) == _link_names(net_pod.sh("ip", "-o", "link")), links
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert _link_names(links) != _link_names(host_links)
    addr = _exec(rig, web, "addr", "ip -o -4 addr show eth0")
    assert f"inet {net_pod.eth0.ips[0]}" in addr, addr
    assert _exec(rig, web, "name", "hostname") == f"{HOSTNAME}\n"
    assert _exec(rig, sandbox, "name", "hostname") == f"{HOSTNAME}\n"
    assert Path("/proc/sys/kernel/hostname").read_text().strip() != HOSTNAME

    for task in (web, sandbox):
        rig.ctr("task", "kill", "-s", "SIGKILL", task)
        wait_status(rig, task, "STOPPED")
        remove(rig, task)
    assert_clean(rig)
    assert net_pod.snapshot() == before


def test_local_missing_netns_fails_create_naming_the_fix(rig: KataRig) -> None:
    missing = f"/run/netns/{rig.marker}-missing"
    task = rig.id("nons")
    path = rig.spec_file(task, rig.sh("true"))
    data = json.loads(path.read_text())
    data["linux"]["namespaces"].append({"type": "network", "path": missing})
    path.write_text(json.dumps(data))
    result = rig.ctr(*rig.run_spec_args(task, path, "--rm"))
    assert result.returncode != 0, _out(result)
    assert f"network namespace {missing} does not exist" in _out(result), _out(result)
    rig.ctr("container", "delete", task)
    assert_clean(rig)
