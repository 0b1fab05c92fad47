"""Bundle spec, pod placement from annotations, Any payloads, rootfs mount commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim import errors
from kata_shim.proto import mount_pb2, runtimeoptions_pb2
from kata_shim.sandbox.base import PodNetworkRequest
from kata_shim.task.mounts import mount_argv
from kata_shim.task.spec import (
    Placement,
    Role,
    agent_spec,
    config_path,
    exec_process,
    host_rootfs,
    linux_resources,
    load_bundle_spec,
    placement,
    pod_network,
    sandbox_pidns,
)

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, Placement(Role.SINGLE, "c1")),
        ({"io.kubernetes.cri.container-type": "sandbox"}, Placement(Role.SANDBOX, "c1")),
        (
            {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": "pod1",
            },
            Placement(Role.CONTAINER, "pod1"),
        ),
        ({"io.kubernetes.cri-o.ContainerType": "sandbox"}, Placement(Role.SANDBOX, "c1")),
        (
            {
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.cri-o.SandboxID": "pod2",
            },
            Placement(Role.CONTAINER, "pod2"),
        ),
        ({"io.kubernetes.docker.type": "podsandbox"}, Placement(Role.SANDBOX, "c1")),
        (
            {"io.kubernetes.docker.type": "container", "io.kubernetes.sandbox.id": "pod3"},
            Placement(Role.CONTAINER, "pod3"),
        ),
    ],
)
def test_placement_from_annotations(annotations: dict[str, str], expected: Placement) -> None:
    assert placement("c1", annotations) == expected


def test_container_without_sandbox_id_is_invalid() -> None:
    with pytest.raises(errors.InvalidArgument):
        placement("c1", {"io.kubernetes.cri.container-type": "container"})


def test_bundle_spec_and_root_path(tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound):
        load_bundle_spec(str(tmp_path))
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(errors.InvalidArgument):
        load_bundle_spec(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"root": {"path": "rfs"}}))
    spec = load_bundle_spec(str(tmp_path))
    assert host_rootfs(str(tmp_path), spec) == tmp_path / "rfs"
    assert host_rootfs(str(tmp_path), {"root": {"path": "/abs/root"}}) == Path("/abs/root")


def test_agent_spec_is_constrained_for_a_guest() -> None:
    spec = {
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/", "terminal": True},
        "root": {"path": "rootfs", "readonly": True},
        "hooks": {"prestart": [{"path": "/usr/bin/hook"}]},
        "annotations": {"a": "b"},
        "linux": {
            "cgroupsPath": "kubepods-x.slice:cri:c1",
            "namespaces": [
                {"type": "pid", "path": "/proc/9/ns/pid"},
                {"type": "network", "path": "/var/run/netns/x"},
                {"type": "cgroup"},
                {"type": "mount"},
            ],
        },
    }
    message = agent_spec(spec, "/guest/c1/rootfs")
    assert (message.Root.Path, message.Root.Readonly) == ("/guest/c1/rootfs", True)
    # pid: removed, the agent decides (sandbox_pidns); network/cgroup: the sandbox's
    assert [(n.Type, n.Path) for n in message.Linux.Namespaces] == [("mount", "")]
    assert message.Linux.CgroupsPath == ""
    assert not message.HasField("Hooks")
    assert list(message.Process.Args) == ["sh"] and message.Process.Terminal
    assert dict(message.Annotations) == {"a": "b"}
    assert spec["root"]["path"] == "rootfs"  # the caller's dict is untouched
    # the local agent (no VM) gets the pid entry as the spec has it, path emptied
    local = agent_spec(spec, "/c1/rootfs", vm=False)
    assert [(n.Type, n.Path) for n in local.Linux.Namespaces] == [("pid", ""), ("mount", "")]
    # ... and its cgroup inside the pod's cgroup_parent, as runc's (sandbox/podcgroup.py)
    assert local.Linux.CgroupsPath == "/kubepods.slice/kubepods-x.slice/c1"
    cgroupfs = {**spec, "linux": {**spec["linux"], "cgroupsPath": "/kubepods/pod1/c1"}}
    assert agent_spec(cgroupfs, "/c1/rootfs", vm=False).Linux.CgroupsPath == "/kubepods/pod1/c1"
    assert agent_spec(cgroupfs, "/guest/c1/rootfs").Linux.CgroupsPath == ""
    relative = {**spec, "linux": {**spec["linux"], "cgroupsPath": "c1"}}
    assert agent_spec(relative, "/c1/rootfs", vm=False).Linux.CgroupsPath == ""


@pytest.mark.parametrize(
    ("namespaces", "shared"),
    [
        # containerd's CRI, namespace_options.pid = POD: the pause container's pid ns path
        ([{"type": "pid", "path": "/proc/4242/ns/pid"}, {"type": "ipc"}], True),
        # pid = CONTAINER (and the pause container itself): an entry without a path
        ([{"type": "pid"}, {"type": "ipc", "path": "/proc/4242/ns/ipc"}], False),
        ([{"type": "ipc"}], False),  # pid = NODE: no entry (a new one in the guest)
        ([], False),
    ],
)
def test_sandbox_pidns_is_a_pid_namespace_path(
    namespaces: list[dict[str, str]], shared: bool
) -> None:
    assert sandbox_pidns({"linux": {"namespaces": namespaces}}) is shared
    assert sandbox_pidns({}) is False


def test_exec_process_and_resources_payloads() -> None:
    payload = AnyMessage(value=json.dumps({"args": ["ls"], "cwd": "/tmp"}).encode())
    process = exec_process(payload, terminal=True)
    assert (list(process.Args), process.Cwd, process.Terminal) == (["ls"], "/tmp", True)
    for bad in (b"nope", b"{}", b'{"args": []}'):
        with pytest.raises(errors.InvalidArgument):
            exec_process(AnyMessage(value=bad), terminal=False)
    resources = linux_resources(AnyMessage(value=b'{"cpu": {"shares": 512}}'))
    assert resources.CPU.Shares == 512
    with pytest.raises(errors.InvalidArgument):
        linux_resources(AnyMessage(value=b"[]"))


@pytest.mark.parametrize(
    "type_url",
    [
        "runtimeoptions.v1.Options",
        "cri.runtimeoptions.v1.Options",
        "types.googleapis.com/runtimeoptions.v1.Options",
    ],
)
def test_config_path_from_either_options_type(type_url: str) -> None:
    options = runtimeoptions_pb2.Options(config_path="/etc/kata/x.toml")
    payload = AnyMessage(type_url=type_url, value=options.SerializeToString())
    assert config_path(payload) == "/etc/kata/x.toml"


def test_config_path_absent_or_foreign() -> None:
    assert config_path(None) is None
    assert config_path(AnyMessage()) is None
    assert config_path(AnyMessage(type_url="containerd.runc.v1.Options", value=b"\x01")) is None
    empty = AnyMessage(type_url="runtimeoptions.v1.Options", value=b"")
    assert config_path(empty) is None
    with pytest.raises(errors.InvalidArgument):
        config_path(AnyMessage(type_url="runtimeoptions.v1.Options", value=b"\xff\xff"))


def test_mount_commands() -> None:
    target = Path("/b/rootfs")
    bind = mount_pb2.Mount(type="bind", source="/snap", options=["rbind", "ro"])
    assert mount_argv(bind, target) == ["mount", "-o", "rbind,ro", "/snap", "/b/rootfs"]
    plain = mount_pb2.Mount(type="bind", source="/snap")
    assert mount_argv(plain, target) == ["mount", "-o", "bind", "/snap", "/b/rootfs"]
    overlay = mount_pb2.Mount(
        type="overlay", source="overlay", options=["lowerdir=/l", "upperdir=/u", "workdir=/w"]
    )
    assert mount_argv(overlay, target) == [
        "mount",
        "-t",
        "overlay",
        "-o",
        "lowerdir=/l,upperdir=/u,workdir=/w",
        "overlay",
        "/b/rootfs",
    ]
    with pytest.raises(errors.InvalidArgument):
        mount_argv(mount_pb2.Mount(source="/x"), target)


def test_pod_network_is_the_network_namespace_path() -> None:
    def spec(*namespaces: dict[str, str]) -> dict[str, object]:
        return {"linux": {"namespaces": list(namespaces)}}

    found = pod_network(spec({"type": "pid"}, {"type": "network", "path": "/run/netns/p"}))
    assert found == PodNetworkRequest(Path("/run/netns/p"))
    assert pod_network(spec({"type": "network"})) is None  # a new netns: nothing to carry
    assert pod_network(spec({"type": "pid"})) is None
    assert pod_network({}) is None
    assert pod_network({"linux": {"namespaces": "junk"}}) is None
