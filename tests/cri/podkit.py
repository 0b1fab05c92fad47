"""One CRI pod driven through a CriClient: the steps every CRI scenario uses, and the checks
that teardown left nothing behind (processes, mounts, pod netns, cgroups, CRI objects)."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from kata_shim.devenv import ociimage
from kata_shim.devenv.cri import CriRig
from kata_shim.devenv.criclient import CriClient, container_config, pod_config
from kata_shim.proto import cri_pb2

# CRI log format: RFC 3339 nano timestamp, stream, P(artial)/F(ull) tag, the line.
LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$"
)
# A container that prints one line on each stream, then waits; TERM ends it with status 0.
CHATTY = "trap 'exit 0' TERM; echo to-stdout; echo to-stderr >&2; while :; do sleep 1; done"


class Pod:
    """A pod sandbox of `handler` with helpers to add containers and to tear it all down."""

    def __init__(
        self,
        rig: CriRig,
        client: CriClient,
        handler: str,
        name: str,
        annotations: dict[str, str] | None = None,
        *,
        cgroup_parent: str = "",
    ) -> None:
        self.rig, self.client, self.handler = rig, client, handler
        self.log_dir = rig.log_root / f"{name}-{uuid.uuid4().hex[:8]}"
        self.config = pod_config(name, uuid.uuid4().hex, log_directory=str(self.log_dir))
        if cgroup_parent:  # kubelet's pod cgroup (cgroupfs path or systemd slice path)
            self.config.linux.cgroup_parent = cgroup_parent
        self.config.annotations.update(annotations or {})
        try:
            self.id = client.run_pod(self.config, handler)
        except Exception:
            self._remove_half_made()  # CRI may have made the pod after our deadline
            raise
        self.containers: list[str] = []

    def _remove_half_made(self) -> None:
        """After a failed RunPodSandbox: stop and remove any pod CRI lists with our uid."""
        uid = self.config.metadata.uid
        for pod in self.client.list_pods():
            if pod.metadata.uid == uid:
                try:
                    self.client.stop_pod(pod.id)
                    self.client.remove_pod(pod.id)
                except Exception as error:  # reported; RunPodSandbox's error is the one raised
                    print(f"removing half-made pod {pod.id}: {error}")

    def add(self, name: str, script: str, *, start: bool = True) -> str:
        """Create (and start) a busybox container running `sh -c script`, logging to <name>.log."""
        config = container_config(
            name, ociimage.BUSYBOX.name, ["/bin/sh", "-c", script], log_path=f"{name}.log"
        )
        container_id = self.client.create_container(self.id, config, self.config)
        self.containers.append(container_id)
        if start:
            self.client.start_container(container_id)
        return container_id

    def log_lines(self, name: str) -> list[tuple[str, str, str]]:
        """(stream, tag, text) of every line of the container's CRI log; asserts the format."""
        found = []
        for line in (self.log_dir / f"{name}.log").read_text().splitlines():
            match = LOG_LINE.match(line)
            assert match, f"not a CRI log line: {line!r}"
            found.append((match.group(2), match.group(3), match.group(4)))
        return found

    def wait_log(self, name: str, count: int, timeout: float = 30.0) -> list[tuple[str, str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            path = self.log_dir / f"{name}.log"
            lines = self.log_lines(name) if path.exists() else []
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.2)

    def teardown(self) -> None:
        """Stop and remove each container (CRI), then StopPodSandbox and RemovePodSandbox."""
        for container_id in self.containers:
            self.client.stop_container(container_id, timeout=10)
            self.client.remove_container(container_id)
        self.client.stop_pod(self.id)
        self.client.remove_pod(self.id)

    def teardown_quietly(self) -> None:
        """teardown() after a failed test: best effort, so the test's own error is the one shown."""
        try:
            self.teardown()
        except Exception as error:  # reported; the failing test's error wins
            print(f"teardown of pod {self.id} after a failure: {error}")


def state(value: int) -> str:
    return cri_pb2.ContainerState.Name(value)


def processes_in(ids: list[str]) -> list[tuple[int, str]]:
    """Live processes whose cgroup path or argv names one of `ids` (a pod's or container's)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/cgroup").read_text()
            text += Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(i in text for i in ids):
            found.append((int(name), text.strip().splitlines()[-1]))
    return found


def leftovers(
    rig: CriRig, client: CriClient, ids: list[str], timeout: float = 15.0
) -> dict[str, Any]:
    """What a torn-down pod left behind (waits, bounded, for processes to go)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, Any] = {
            "marked processes": rig.leftovers(),
            "pod/container processes": processes_in(ids),
            "mounts": rig.mounts(),
            "pod netns files": rig.pod_netns_files(),
            "CRI pods": [p.id for p in client.list_pods()],
            "CRI containers": [c.id for c in client.list_containers()],
        }
        if not any(found.values()) or time.monotonic() > deadline:
            return {key: value for key, value in found.items() if value}
        time.sleep(0.3)
