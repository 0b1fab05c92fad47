"""CNI for tests: a private "host" network namespace, CNI bridge networks in it, pod netns.

`CniHost` owns, under one unique marker (`net-<hex>` unless given another prefix):
  * the test's "host" netns `/run/netns/<marker>` (lo up). Debian's CNI plugins
    (/usr/lib/cni: bridge, host-local, loopback) run inside it through
    `nsenter --net=`, so the bridge, its gateway address and the host ends of the
    veths live there and never in the machine's root namespace;
  * pod network namespaces `/run/netns/<marker>-<pod>`;
  * a scratch directory for host-local's IPAM state.

`CniNetwork` describes one bridge network (its own bridge, IPv4 and optional IPv6
subnet); `attach()` runs the conflist's ADD (bridge + host-local, then loopback on
`lo`) for a pod and returns the CNI result. `close()` works after any failure: DEL
for every attachment in reverse order, then every netns and the scratch dir are
removed, so nothing is left on the machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CNI_BIN_DIR", "CniError", "CniHost", "CniNetwork", "PodAttachment"]

CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CNI_VERSION = "1.0.0"
NETNS_DIR = Path("/run/netns")


class CniError(RuntimeError):
    """A CNI plugin failed; the message carries the plugin's own error JSON."""


@dataclass(frozen=True, slots=True)
class CniNetwork:
    """One bridge network inside the test's host netns."""

    name: str
    bridge: str  # <= 15 characters
    subnet: str  # IPv4, e.g. 10.88.3.0/24 (the gateway is its first address)
    subnet6: str | None = None  # optional IPv6 range, e.g. fd00:88:3::/64

    @property
    def gateway(self) -> str:
        """The bridge's address: the subnet's first host (host-local's default gateway)."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def conflist(self, ipam_dir: Path) -> dict[str, Any]:
        ranges: list[list[dict[str, str]]] = [[{"subnet": self.subnet}]]
        routes = [{"dst": "0.0.0.0/0"}]
        if self.subnet6:
            ranges.append([{"subnet": self.subnet6}])
            routes.append({"dst": "::/0"})
        ipam = {"type": "host-local", "ranges": ranges, "routes": routes, "dataDir": str(ipam_dir)}
        bridge = {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": ipam,
        }
        plugins = [bridge, {"type": "loopback"}]
        return {"cniVersion": CNI_VERSION, "name": self.name, "plugins": plugins}


@dataclass(slots=True)
class PodAttachment:
    network: CniNetwork
    netns: Path
    ifname: str
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ips(self) -> list[str]:
        """The pod's addresses in CIDR form ("10.88.3.2/24")."""
        return [ip["address"] for ip in self.result.get("ips", [])]

    @property
    def mac(self) -> str:
        for iface in self.result.get("interfaces", []):
            if iface.get("sandbox") and iface.get("name") == self.ifname:
                return str(iface["mac"])
        raise CniError(f"CNI result names no interface {self.ifname} in the pod: {self.result}")


class CniHost:
    """The test's own host netns with CNI networks and pod netns below it. A context manager."""

    def __init__(self, prefix: str = "net-") -> None:
        self.marker = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.netns = NETNS_DIR / self.marker
        self.work = Path(tempfile.mkdtemp(prefix=f"{self.marker}-"))
        self.pods: list[Path] = []
        self.attachments: list[PodAttachment] = []

    def network(self, index: int, *, ipv6: bool = False) -> CniNetwork:
        """Network number `index` of this host: bridge `<marker-tail>br<i>`, 10.<x>.<i>.0/24."""
        octet = int(self.marker[-2:], 16) % 200 + 20
        return CniNetwork(
            name=f"{self.marker}-n{index}",
            bridge=f"br{index}-{self.marker[-8:]}"[:15],
            subnet=f"10.{octet}.{index}.0/24",
            subnet6=f"fd00:{octet:x}:{index:x}::/64" if ipv6 else None,
        )

    def start(self) -> None:
        try:
            _netns_add(self.netns)
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def new_pod(self, name: str) -> Path:
        """An empty pod netns (`<marker>-<name>`, lo down as a fresh netns is)."""
        path = NETNS_DIR / f"{self.marker}-{name}"
        self.pods.append(path)
        _netns_add(path)
        return path

    def attach(self, pod: Path, network: CniNetwork, ifname: str = "eth0") -> PodAttachment:
        """CNI ADD of `network` for `pod` (run inside the host netns)."""
        att = PodAttachment(network, pod, ifname)
        self.attachments.append(att)
        att.result = self._run_list("ADD", att)
        return att

    def detach(self, att: PodAttachment) -> None:
        """CNI DEL (idempotent, as CNI requires)."""
        self._run_list("DEL", att)
        if att in self.attachments:
            self.attachments.remove(att)

    def run(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command in the host netns; raises with its output when it fails."""
        return _run(["nsenter", f"--net={self.netns}", *argv], timeout=timeout)

    def in_pod(
        self, pod: Path, *argv: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return _run(["nsenter", f"--net={pod}", *argv], timeout=timeout)

    def _run_list(self, command: str, att: PodAttachment) -> dict[str, Any]:
        conflist = att.network.conflist(self.work / "ipam")
        plugins = conflist["plugins"]
        order = plugins if command == "ADD" else list(reversed(plugins))
        prev: dict[str, Any] | None = None
        for plugin in order:
            conf = {"cniVersion": CNI_VERSION, "name": conflist["name"], **plugin}
            if prev is not None and command == "ADD":
                conf["prevResult"] = prev
            ifname = "lo" if plugin["type"] == "loopback" else att.ifname
            out = self._plugin(command, plugin["type"], conf, att, ifname)
            if command == "ADD" and plugin["type"] != "loopback":
                prev = out
        return prev or {}

    def _plugin(
        self, command: str, kind: str, conf: dict[str, Any], att: PodAttachment, ifname: str
    ) -> dict[str, Any]:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": f"{att.netns.name}-{att.ifname}",
            "CNI_NETNS": str(att.netns),
            "CNI_IFNAME": ifname,
            "CNI_PATH": str(CNI_BIN_DIR),
        }
        done = subprocess.run(
            ["nsenter", f"--net={self.netns}", str(CNI_BIN_DIR / kind)],
            input=json.dumps(conf),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise CniError(f"CNI {kind} {command} for {att.netns.name}: {done.stdout}{done.stderr}")
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def close(self) -> None:
        for att in reversed(self.attachments):
            with contextlib.suppress(Exception):
                self._run_list("DEL", att)
        self.attachments.clear()
        for path in [*self.pods, self.netns]:
            _netns_delete(path)
        self.pods.clear()
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> CniHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run(argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise CniError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _netns_add(path: Path) -> None:
    _run(["ip", "netns", "add", path.name], timeout=30)


def _netns_delete(path: Path) -> None:
    if path.exists() or os.path.lexists(path):
        subprocess.run(["ip", "netns", "delete", path.name], capture_output=True, check=False)
