"""Wire conformance of our .proto files with containerd 1.6.20's own definitions.

Debian's golang-github-containerd-containerd-dev ships containerd's .proto files
(and containerd/cgroups' metrics). We compile those with grpcio-tools into a
FileDescriptorSet (never loading them into the process's descriptor pool) and
compare, for every message we define that also exists upstream, each of our
fields' number, type, label and referenced type, and each enum's values.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2

GOCODE = Path("/usr/share/gocode/src")
CONTAINERD = GOCODE / "github.com/containerd/containerd"
UPSTREAM_FILES = [
    "github.com/containerd/containerd/runtime/v2/task/shim.proto",
    "github.com/containerd/containerd/api/events/task.proto",
    "github.com/containerd/containerd/api/services/ttrpc/events/v1/events.proto",
    "github.com/containerd/containerd/api/types/mount.proto",
    "github.com/containerd/containerd/api/types/metrics.proto",
    "github.com/containerd/containerd/api/types/task/task.proto",
    "github.com/containerd/containerd/pkg/runtimeoptions/v1/api.proto",
    "github.com/containerd/cgroups/stats/v1/metrics.proto",
    "github.com/containerd/cgroups/v2/stats/metrics.proto",
]
OURS = [
    "task",
    "task_types",
    "mount",
    "metrics",
    "events",
    "events_service",
    "runtimeoptions",
    "cgroups_v1",
    "cgroups_v2",
]
# Fields we define that containerd 1.6.20 does not have yet (added upstream later).
NEWER_THAN_1_6 = {"runtimeoptions.v1.Options.config_body": "added in containerd 1.7 (field 3)"}
MUST_EXIST = [
    "containerd.task.v2.CreateTaskRequest",
    "containerd.task.v2.StateResponse",
    "containerd.task.v2.DeleteResponse",
    "containerd.task.v2.WaitResponse",
    "containerd.task.v2.ConnectResponse",
    "containerd.task.v2.ShutdownRequest",
    "containerd.events.TaskExit",
    "containerd.events.TaskCreate",
    "containerd.events.TaskOOM",
    "containerd.services.events.ttrpc.v1.Envelope",
    "runtimeoptions.v1.Options",
    "io.containerd.cgroups.v1.Metrics",
    "io.containerd.cgroups.v2.Metrics",
    "containerd.v1.types.ProcessInfo",
    "containerd.types.Mount",
]


def _index(files: list[descriptor_pb2.FileDescriptorProto]) -> tuple[dict, dict, dict]:
    messages, enums, services = {}, {}, {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        messages[name] = message
        for nested in message.nested_type:
            walk(name, nested)
        for enum in message.enum_type:
            enums[f"{name}.{enum.name}"] = enum

    for proto in files:
        for message in proto.message_type:
            walk(proto.package, message)
        for enum in proto.enum_type:
            enums[f"{proto.package}.{enum.name}"] = enum
        for service in proto.service:
            services[f"{proto.package}.{service.name}"] = service
    return messages, enums, services


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, dict]:
    if not CONTAINERD.is_dir():
        pytest.fail(
            f"{CONTAINERD} missing: run scripts/dev.sh setup "
            "(installs golang-github-containerd-containerd-dev)"
        )
    # runtimeoptions imports gogo.proto by its long path, everything else by the
    # short one: protoc refuses one file under two names, so compile separately.
    long_gogo = [f for f in UPSTREAM_FILES if "runtimeoptions" in f]
    groups = [[f for f in UPSTREAM_FILES if f not in long_gogo], long_gogo]
    files: list[descriptor_pb2.FileDescriptorProto] = []
    for number, group in enumerate(groups):
        out = tmp_path_factory.mktemp("upstream") / f"set{number}.pb"
        files += _compile(group, out, short_gogo=number == 0)
    return _index(files)


def _compile(protos: list[str], out: Path, short_gogo: bool) -> list:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    includes = [f"-I{GOCODE}", f"-I{well_known}"]
    if short_gogo:
        includes.insert(1, f"-I{GOCODE / 'github.com/gogo/protobuf'}")
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *includes,
        "--include_imports",
        f"--descriptor_set_out={out}",
        *protos,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


@pytest.fixture(scope="module")
def ours() -> tuple[dict, dict, dict]:
    files = []
    for name in OURS:
        proto = descriptor_pb2.FileDescriptorProto()
        importlib.import_module(f"kata_shim.proto.{name}_pb2").DESCRIPTOR.CopyToProto(proto)
        files.append(proto)
    return _index(files)


def test_messages_fields_and_enums_match_upstream(upstream, ours) -> None:
    up_msgs, up_enums, _ = upstream
    our_msgs, our_enums, _ = ours
    compared_msgs = compared_fields = 0
    problems = []
    for name, message in our_msgs.items():
        if name not in up_msgs:
            continue
        compared_msgs += 1
        theirs = {f.name: f for f in up_msgs[name].field}
        for field in message.field:
            compared_fields += 1
            other = theirs.get(field.name)
            if other is None and f"{name}.{field.name}" in NEWER_THAN_1_6:
                continue
            if other is None:
                problems.append(f"{name}.{field.name}: not upstream")
                continue
            ours_key = (field.number, field.type, field.label, field.type_name)
            theirs_key = (other.number, other.type, other.label, other.type_name)
            if ours_key != theirs_key:
                problems.append(f"{name}.{field.name}: ours {ours_key} upstream {theirs_key}")
    compared_enums = 0
    for name, enum in our_enums.items():
        if name in up_enums:
            compared_enums += 1
            ours_values = {v.name: v.number for v in enum.value}
            theirs_values = {v.name: v.number for v in up_enums[name].value}
            if ours_values != theirs_values:
                problems.append(f"enum {name}: ours {ours_values} upstream {theirs_values}")
    print(
        f"conformance: compared {compared_msgs} messages, {compared_fields} fields, "
        f"{compared_enums} enums with containerd 1.6.20"
    )
    assert not problems, "\n".join(problems)
    unmatched = sorted(set(our_msgs) - set(up_msgs))
    assert unmatched == [], f"messages we define that containerd 1.6.20 lacks: {unmatched}"


def test_upstream_fields_we_omit_are_only_the_known_ones(upstream, ours) -> None:
    """Every upstream field of the messages we define is defined by us too."""
    up_msgs, _, _ = upstream
    our_msgs, _, _ = ours
    missing = [
        f"{name}.{f.name}"
        for name, m in our_msgs.items()
        if name in up_msgs
        for f in up_msgs[name].field
        if f.name not in {x.name for x in m.field}
    ]
    assert missing == []


def test_required_messages_exist(ours) -> None:
    our_msgs, _, _ = ours
    assert [name for name in MUST_EXIST if name not in our_msgs] == []


def test_services_match_upstream(upstream, ours) -> None:
    _, _, up_services = upstream
    _, _, our_services = ours
    for name in ("containerd.task.v2.Task", "containerd.services.events.ttrpc.v1.Events"):

        def shape(svc):
            return sorted((m.name, m.input_type, m.output_type) for m in svc.method)

        assert shape(our_services[name]) == shape(up_services[name]), name
    assert len(our_services["containerd.task.v2.Task"].method) == 17
