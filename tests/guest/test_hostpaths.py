"""In a VM the agent refuses host rootfs/bind paths and drops host namespace and device paths."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kata_shim.errors import InvalidArgument
from kata_shim.guest import hostpaths
from kata_shim.sandbox.share import GUEST_SHARED

SHARED = f"{hostpaths.SHARED_DIR}/c1"
ROOTS = [hostpaths.SHARED_DIR, "/run/kata-containers/sandbox/ephemeral"]


def _config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "root": {"path": f"{SHARED}/rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": f"{SHARED}/mount-3",
             "options": ["rbind", "ro"]},
            {"destination": "/cache", "type": "bind",
             "source": "/run/kata-containers/sandbox/ephemeral/cache", "options": ["rbind"]},
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc", "path": "/proc/4242/ns/ipc"},
                {"type": "network", "path": "/var/run/netns/cni-1"},
            ],
            "devices": [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}],
        },
    }  # fmt: skip
    config.update(changes)
    return config


def test_the_shared_dir_is_the_one_the_host_shares() -> None:
    assert hostpaths.SHARED_DIR == GUEST_SHARED


def test_running_in_vm_reads_the_kernel_command_line() -> None:
    assert hostpaths.running_in_vm("console=ttyS0 kata_shim.agent=vport:agent.channel.0 quiet")
    assert not hostpaths.running_in_vm("console=ttyS0 quiet")


def test_host_namespace_and_device_paths_are_dropped() -> None:
    config = hostpaths.confine(_config(), "c1", ROOTS)
    assert config["linux"]["namespaces"] == [{"type": "pid"}, {"type": "ipc"}]
    assert "devices" not in config["linux"]
    assert [m["destination"] for m in config["mounts"]] == ["/proc", "/data", "/cache"]


@pytest.mark.parametrize(
    "root",
    ["/", "/etc", "/run/kata-containers/shared", f"{SHARED}/../../../../etc", "rootfs", ""],
)
def test_a_rootfs_outside_the_shared_dir_is_refused(root: str) -> None:
    with pytest.raises(InvalidArgument, match="outside the shared directory"):
        hostpaths.confine(_config(root={"path": root}), "c1", ROOTS)


@pytest.mark.parametrize("source", ["/etc", "/var/lib/kubelet/pods/x", f"{SHARED}/../../x"])
def test_a_bind_source_outside_the_shared_dir_is_refused(source: str) -> None:
    config = _config()
    config["mounts"].append({"destination": "/x", "type": "bind", "source": source})
    with pytest.raises(InvalidArgument, match=r"bind mount source .* outside the shared"):
        hostpaths.confine(config, "c1", ROOTS)


def test_a_host_bind_onto_the_containers_dev_is_dropped() -> None:
    config = _config()
    extra = {"destination": "/dev/termination-log", "type": "bind", "source": "/var/lib/x/log"}
    config["mounts"].append(extra)
    kept = hostpaths.confine(copy.deepcopy(config), "c1", ROOTS)["mounts"]
    assert extra not in kept and len(kept) == 3
