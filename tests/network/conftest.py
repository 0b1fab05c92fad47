"""Fixtures for kata_shim.network: a CNI pod in a test-owned host netns (kata_shim.devenv.cni)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kata_shim.devenv.cni import CniHost, PodAttachment

#: an HTTP GET (busybox's static wget segfaults on this host, status -11)
GET = (
    "import sys, urllib.request as u; "
    "sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())"
)


@dataclass
class Pod:
    host: CniHost
    netns: Path
    eth0: PodAttachment

    @property
    def spec(self) -> dict[str, Any]:
        return {"linux": {"namespaces": [{"type": "network", "path": str(self.netns)}]}}

    def sh(self, *argv: str) -> str:
        return self.host.in_pod(self.netns, *argv).stdout

    def snapshot(self) -> str:
        """Everything teardown must restore: links (detailed), qdiscs, filters, addresses."""
        parts = [self.sh("ip", "-d", "link"), self.sh("ip", "addr"), self.sh("tc", "qdisc", "show")]
        for line in self.sh("ip", "-o", "link").splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            parts.append(self.sh("tc", "filter", "show", "dev", name, "ingress"))
        return "\n".join(parts)

    def http_get(self, url: str, attempts: int = 30) -> str:
        """GET `url` from the test's host netns, retried while the pod's network comes up."""
        out = ""
        for _ in range(attempts):
            done = subprocess.run(
                ["nsenter", f"--net={self.host.netns}", sys.executable, "-c", GET, url],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return done.stdout
            out = f"status {done.returncode}: {done.stdout} {done.stderr}"
            time.sleep(1)
        raise AssertionError(f"{url} did not answer from the host netns: {out}")


@pytest.fixture
def cni_host() -> Iterator[CniHost]:
    with CniHost() as host:
        yield host


@pytest.fixture
def pod(cni_host: CniHost) -> Pod:
    netns = cni_host.new_pod("pod")
    return Pod(cni_host, netns, cni_host.attach(netns, cni_host.network(0, ipv6=True)))
