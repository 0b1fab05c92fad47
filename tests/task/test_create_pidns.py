"""Create sends CreateContainer.sandbox_pidns as Kata's runtime does: true when the spec's pid
namespace entry names a path (containerd's CRI, namespace_options.pid = POD), and never
passes the pid entry itself (the agent gives the pod's or a new PID namespace)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kata_shim.proto import task_pb2
from tests.task.harness import CRI_SANDBOX, CTX, cri_container, harness

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


def _with_pid_path(bundle: str, path: str) -> None:
    config = Path(bundle) / "config.json"
    spec = json.loads(config.read_text())
    spec["linux"]["namespaces"] = [
        {"type": "pid", "path": path},
        {"type": "ipc", "path": path.replace("/pid", "/ipc")},
        {"type": "uts", "path": path.replace("/pid", "/uts")},
        {"type": "network", "path": "/var/run/netns/cni-x"},
    ]
    config.write_text(json.dumps(spec))


async def test_a_pid_namespace_path_asks_for_the_pods_pid_namespace() -> None:
    async with harness() as h:
        await h.create("pod", ["sleep"], CRI_SANDBOX)
        await h.create("own", ["sleep"], cri_container("pod"))  # pid = CONTAINER: no path
        bundle = h.bundle("shared", ["sleep"], cri_container("pod"))
        _with_pid_path(bundle, "/proc/4242/ns/pid")  # pid = POD
        await h.service.Create(CTX, task_pb2.CreateTaskRequest(id="shared", bundle=bundle))
        agent = h.sandbox("pod").agent
        flags = {cid: c.sandbox_pidns for cid, c in agent.containers.items()}
        assert flags == {"pod": False, "own": False, "shared": True}
        spec = agent.containers["shared"].spec
        # host paths never reach the agent: ipc/uts become the pod's there
        assert [(ns.Type, ns.Path) for ns in spec.Linux.Namespaces] == [("ipc", ""), ("uts", "")]
