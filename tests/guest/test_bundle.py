"""grpc.Spec / grpc.Process → runc JSON, with the agent's own decisions on top."""

from __future__ import annotations

import pytest

from kata_shim import errors, oci
from kata_shim.guest import bundle
from kata_shim.proto import oci_pb2
from tests.fakes.rootfs import oci_spec, private_rootfs

pytestmark = [pytest.mark.timeout(20)]


def config(spec: dict, cid: str = "c1") -> dict:
    return bundle.container_config(oci.spec_from_json(spec), sandbox_id="sb", container_id=cid)


def test_round_trip_keeps_what_runc_needs_and_adds_the_cgroup_parent() -> None:
    spec = oci_spec(["/bin/sh", "-c", "echo hi"], terminal=True, memory=16 << 20)
    out = config(spec)
    assert out["root"] == {"path": str(private_rootfs()), "readonly": True}
    assert out["process"]["args"] == ["/bin/sh", "-c", "echo hi"]
    assert out["process"]["terminal"] is True
    assert out["process"]["env"] == ["PATH=/bin:/usr/bin", "TERM=xterm"]
    assert out["process"]["cwd"] == "/"
    assert out["process"]["user"] == {}  # uid/gid 0 (proto3 zero values)
    assert out["linux"]["resources"]["memory"] == {"limit": 16 << 20, "swap": 16 << 20}
    assert out["linux"]["cgroupsPath"] == "/kata_shim/sb/c1"
    assert out["mounts"] == spec["mounts"]
    assert out["ociVersion"] == spec["ociVersion"]
    assert {n["type"] for n in out["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/custom/path", "/custom/path"),
        ("kubepods-besteffort.slice:cri-containerd:c1", "/kata_shim/sb/c1"),  # systemd style
        ("", "/kata_shim/sb/c1"),
    ],
)
def test_cgroups_path(given: str, expected: str) -> None:
    spec = oci_spec(["/bin/true"])
    spec["linux"]["cgroupsPath"] = given
    assert config(spec)["linux"]["cgroupsPath"] == expected


def test_namespace_paths_missing_here_are_dropped() -> None:
    spec = oci_spec(["/bin/true"])
    spec["linux"]["namespaces"] += [
        {"type": "network", "path": "/var/run/netns/cni-on-the-host"},
        {"type": "cgroup", "path": "/proc/1/ns/does-not-exist"},
    ]
    spec["linux"]["namespaces"][0]["path"] = "/proc/self/ns/pid"  # exists: kept
    namespaces = config(spec)["linux"]["namespaces"]
    assert {"type": "pid", "path": "/proc/self/ns/pid"} in namespaces
    assert {"type": "cgroup"} in namespaces
    assert all(n["type"] != "network" for n in namespaces)


def test_invalid_specs_are_refused() -> None:
    relative = oci_spec(["/bin/true"])
    relative["root"] = {"path": "rootfs"}
    with pytest.raises(errors.InvalidArgument, match="not absolute"):
        config(relative)
    missing = oci_spec(["/bin/true"])
    missing["root"] = {"path": "/nonexistent/rootfs"}
    with pytest.raises(errors.NotFound):
        config(missing)
    no_args = oci_spec([])
    with pytest.raises(errors.InvalidArgument, match="no args"):
        config(no_args)
    no_process = oci_spec(["/bin/true"])
    del no_process["process"]
    with pytest.raises(errors.InvalidArgument, match="no process"):
        config(no_process)


def test_process_and_resources() -> None:
    process = oci_pb2.Process(Args=["/bin/ls"], Terminal=True, ConsoleSize=oci_pb2.Box(Height=5))
    assert bundle.process_config(process) == {
        "args": ["/bin/ls"],
        "terminal": True,
        "consoleSize": {"height": 5},
        "cwd": "/",
        "user": {},
    }
    memory = oci_pb2.LinuxResources(Memory=oci_pb2.LinuxMemory(Limit=1 << 30))
    assert bundle.resources_config(memory) == {"memory": {"limit": 1 << 30}}


@pytest.mark.parametrize("good", ["c1", "a" * 64, "9f3e-uuid.1_x+y"])
def test_valid_ids(good: str) -> None:
    assert bundle.validate_id("exec", good) == good


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-x", ".hidden", "a b", "a" * 129, "é"])
def test_invalid_ids(bad: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        bundle.validate_id("exec", bad)


def test_dev_shm_binds_the_pods_shm_only_when_given() -> None:
    spec = oci_spec(["/bin/true"])
    spec["mounts"] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "//dev/shm/", "type": "tmpfs", "source": "shm", "options": ["size=1k"]},
    ]
    assert config(spec)["mounts"] == spec["mounts"]  # no pod /dev/shm: the spec's own
    out = bundle.container_config(
        oci.spec_from_json(spec), sandbox_id="sb", container_id="c1", shm="/run/agent/shm"
    )
    assert out["mounts"] == [
        spec["mounts"][0],
        {
            "destination": "/dev/shm",
            "type": "bind",
            "source": "/run/agent/shm",
            "options": ["rbind", "nosuid", "nodev", "noexec"],
        },
    ]
