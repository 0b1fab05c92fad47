"""Wire conformance of our .proto files with containerd 1.6.20's own definitions.

Debian's golang-github-containerd-containerd-dev ships containerd's .proto files
and, through its dependencies, containerd/cgroups' metrics, gogo's googleapis
(google.rpc.Status) and containerd/ttrpc 1.1.1 (whose Request/Response are Go
structs with protobuf tags, not a .proto). We compile the .proto files with
grpcio-tools into FileDescriptorSets in a temporary directory (parsed, never
loaded into the process's descriptor pool) and compare them with the
descriptors of our generated modules, both ways:

* every field we define exists upstream with the same number, type, label and
  referenced type (full name), and every upstream field is defined by us;
* enums have the same values; every upstream message and enum is defined by us;
* the Task and Events services have the same methods, requests and responses.

gogo options (nullable, customname, stdtime, ...) change generated Go code, not
the wire, so options are ignored.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from kata_shim.plugin.regen import protoc_argv

GOCODE = Path("/usr/share/gocode/src")
CONTAINERD = GOCODE / "github.com/containerd/containerd"
GOGO_PROTOBUF = GOCODE / "github.com/gogo/protobuf"
GOOGLEAPIS = GOCODE / "github.com/gogo/googleapis"
TTRPC_TYPES_GO = GOCODE / "github.com/containerd/ttrpc/types.go"
SETUP_HINT = "run scripts/dev.sh setup (installs golang-github-containerd-containerd-dev)"

# Upstream files we mirror, by the include root they are compiled from.
UPSTREAM_CONTAINERD = [
    "github.com/containerd/containerd/runtime/v2/task/shim.proto",
    "github.com/containerd/containerd/api/events/task.proto",
    "github.com/containerd/containerd/api/services/ttrpc/events/v1/events.proto",
    "github.com/containerd/containerd/api/types/mount.proto",
    "github.com/containerd/containerd/api/types/metrics.proto",
    "github.com/containerd/containerd/api/types/task/task.proto",
    "github.com/containerd/cgroups/stats/v1/metrics.proto",
    "github.com/containerd/cgroups/v2/stats/metrics.proto",
]
# Imports gogo.proto by its long path; protoc refuses one file under two names,
# so it is compiled on its own.
UPSTREAM_RUNTIMEOPTIONS = ["github.com/containerd/containerd/pkg/runtimeoptions/v1/api.proto"]
UPSTREAM_STATUS = ["google/rpc/status.proto"]
UPSTREAM_FILES = UPSTREAM_CONTAINERD + UPSTREAM_RUNTIMEOPTIONS + UPSTREAM_STATUS

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
    "status",
]
# Fields we define that containerd 1.6.20 does not have (added upstream later).
NEWER_THAN_1_6 = {"runtimeoptions.v1.Options.config_body": "containerd 1.7 added field 3"}

EVENTS = [
    "TaskCreate",
    "TaskStart",
    "TaskDelete",
    "TaskIO",
    "TaskExit",
    "TaskOOM",
    "TaskExecAdded",
    "TaskExecStarted",
    "TaskPaused",
    "TaskResumed",
    "TaskCheckpointed",
]
MUST_EXIST = [
    *(f"containerd.events.{name}" for name in EVENTS),
    "containerd.services.events.ttrpc.v1.Envelope",
    "containerd.services.events.ttrpc.v1.ForwardRequest",
    "runtimeoptions.v1.Options",
    "io.containerd.cgroups.v1.Metrics",
    "io.containerd.cgroups.v2.Metrics",
    "containerd.v1.types.ProcessInfo",
    "containerd.types.Mount",
    "containerd.types.Metric",
    "google.rpc.Status",
]  # plus every request and response of the upstream Task service, see below
SERVICES = ["containerd.task.v2.Task", "containerd.services.events.ttrpc.v1.Events"]

Report = Callable[[str], None]  # the `report` fixture of tests/proto/conftest.py


class Index:
    """Messages, enums and services of some FileDescriptorProtos, by full name."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        for proto in files:
            self._add(proto.package, proto.message_type, proto.enum_type)
            for service in proto.service:
                self.services[f"{proto.package}.{service.name}"] = service

    def _add(self, prefix: str, messages, enums) -> None:
        for enum in enums:
            self.enums[f"{prefix}.{enum.name}"] = enum
        for message in messages:
            name = f"{prefix}.{message.name}"
            self.messages[name] = message
            self._add(name, message.nested_type, message.enum_type)


def field_key(field: descriptor_pb2.FieldDescriptorProto) -> str:
    """What decides the wire format and meaning of a field (options excluded), readably."""
    fdp = descriptor_pb2.FieldDescriptorProto
    words = [
        str(field.number),
        fdp.Label.Name(field.label).removeprefix("LABEL_").lower(),
        fdp.Type.Name(field.type).removeprefix("TYPE_").lower(),
        field.type_name,
        "proto3-optional" if field.proto3_optional else "",
        "in-oneof" if field.HasField("oneof_index") else "",
    ]
    return " ".join(word for word in words if word)


def _compile(protos: list[str], includes: list[Path], out: Path) -> list:
    cmd = [*protoc_argv(), *(f"-I{path}" for path in includes)]
    cmd += ["--include_imports", f"--descriptor_set_out={out}", *protos]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"protoc failed on upstream files:\n{result.stderr}"
    return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Index:
    """Only the messages of UPSTREAM_FILES, not of what they import (gogo, descriptor)."""
    for path in (CONTAINERD, GOGO_PROTOBUF, GOOGLEAPIS, GOCODE / "github.com/containerd/cgroups"):
        if not path.is_dir():
            pytest.fail(f"{path} missing: {SETUP_HINT}")
    tmp = tmp_path_factory.mktemp("upstream")
    files = _compile(UPSTREAM_CONTAINERD, [GOCODE, GOGO_PROTOBUF], tmp / "containerd.pb")
    files += _compile(UPSTREAM_RUNTIMEOPTIONS, [GOCODE], tmp / "runtimeoptions.pb")
    files += _compile(UPSTREAM_STATUS, [GOOGLEAPIS], tmp / "status.pb")
    return Index(f for f in files if f.name in UPSTREAM_FILES)


@pytest.fixture(scope="module")
def ours() -> Index:
    files = []
    for name in OURS:
        proto = descriptor_pb2.FileDescriptorProto()
        importlib.import_module(f"kata_shim.proto.{name}_pb2").DESCRIPTOR.CopyToProto(proto)
        files.append(proto)
    return Index(files)


def test_our_fields_and_enums_match_upstream(upstream: Index, ours: Index, report: Report) -> None:
    messages = fields = enums = 0
    problems = []
    for name, message in ours.messages.items():
        if name not in upstream.messages:
            continue
        messages += 1
        theirs = {f.name: f for f in upstream.messages[name].field}
        for field in message.field:
            fields += 1
            other = theirs.get(field.name)
            if other is None:
                if f"{name}.{field.name}" not in NEWER_THAN_1_6:
                    problems.append(f"{name}.{field.name}: not upstream")
            elif field_key(field) != field_key(other):
                problems.append(
                    f"{name}.{field.name}: ours {field_key(field)} upstream {field_key(other)}"
                )
    for name, enum in ours.enums.items():
        if name in upstream.enums:
            enums += 1
            mine = {v.name: v.number for v in enum.value}
            theirs_values = {v.name: v.number for v in upstream.enums[name].value}
            if mine != theirs_values:
                problems.append(f"enum {name}: ours {mine} upstream {theirs_values}")
    report(
        f"conformance: compared {messages} messages, {fields} fields, {enums} enums "
        "with containerd 1.6.20"
    )
    assert problems == [], "\n".join(problems)


def test_we_define_everything_upstream_defines(upstream: Index, ours: Index) -> None:
    missing = [name for name in upstream.messages if name not in ours.messages]
    missing += [f"enum {name}" for name in upstream.enums if name not in ours.enums]
    for name, message in upstream.messages.items():
        if name in ours.messages:
            defined = {f.name for f in ours.messages[name].field}
            missing += [f"{name}.{f.name}" for f in message.field if f.name not in defined]
    assert missing == []


def test_we_define_nothing_upstream_lacks(upstream: Index, ours: Index) -> None:
    extra = [name for name in ours.messages if name not in upstream.messages]
    extra += [f"enum {name}" for name in ours.enums if name not in upstream.enums]
    assert extra == []


def test_important_messages_exist(upstream: Index, ours: Index) -> None:
    task = upstream.services["containerd.task.v2.Task"]
    rpc_types = {t[1:] for m in task.method for t in (m.input_type, m.output_type)}
    assert len(task.method) == 17
    wanted = sorted(set(MUST_EXIST) | (rpc_types - {"google.protobuf.Empty"}))
    assert [name for name in wanted if name not in ours.messages] == []
    assert ours.enums["containerd.v1.types.Status"].value[3].name == "STOPPED"


def test_services_match_upstream(upstream: Index, ours: Index) -> None:
    def shape(service: descriptor_pb2.ServiceDescriptorProto) -> list[tuple]:
        return sorted(
            (m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            for m in service.method
        )

    assert sorted(ours.services) == sorted(SERVICES)
    for name in SERVICES:
        assert shape(ours.services[name]) == shape(upstream.services[name]), name
    assert len(ours.services["containerd.task.v2.Task"].method) == 17


# ttrpc 1.1's envelope: Go struct fields `Name GoType \`protobuf:"<wire>,<n>,<opt|rep>,name=<name>`.
GO_FIELD = re.compile(r'^\s*\w+\s+(\S+)\s+`protobuf:"(\w+),(\d+),(opt|rep),name=(\w+)')
GO_TYPES = {
    "string": "TYPE_STRING",
    "[]string": "TYPE_STRING",
    "[]byte": "TYPE_BYTES",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "bool": "TYPE_BOOL",
}
WIRE = {"bytes": 2, "varint": 0}  # wire types


def _go_proto_type(go_type: str) -> str:
    return GO_TYPES.get(go_type) or ("TYPE_MESSAGE" if "*" in go_type else f"unknown {go_type}")


def _ttrpc_go_structs() -> dict[str, dict[str, tuple[str, str, int, str]]]:
    if not TTRPC_TYPES_GO.is_file():
        pytest.fail(f"{TTRPC_TYPES_GO} missing: {SETUP_HINT}")
    structs: dict[str, dict[str, tuple[str, str, int, str]]] = {}
    current = None
    for line in TTRPC_TYPES_GO.read_text().splitlines():
        if m := re.match(r"type (\w+) struct", line):
            current = structs.setdefault(m.group(1), {})
        elif current is not None and (tag := GO_FIELD.match(line)):
            go_type, wire, number, label, name = tag.groups()
            current[name] = (_go_proto_type(go_type), wire, int(number), label)
    return {name: fields for name, fields in structs.items() if fields}


def test_ttrpc_envelope_matches_ttrpc_1_1(report: Report) -> None:
    structs = _ttrpc_go_structs()
    proto = descriptor_pb2.FileDescriptorProto()
    importlib.import_module("kata_shim.proto.ttrpc_pb2").DESCRIPTOR.CopyToProto(proto)
    ours = {m.name: m for m in proto.message_type}
    assert sorted(structs) == sorted(ours) == ["KeyValue", "Request", "Response", "StringList"]
    fdp = descriptor_pb2.FieldDescriptorProto
    fields = 0
    for name, go_fields in structs.items():
        mine = {
            f.name: (
                fdp.Type.Name(f.type),
                f.number,
                "rep" if f.label == fdp.LABEL_REPEATED else "opt",
            )
            for f in ours[name].field
        }
        assert sorted(mine) == sorted(go_fields), name
        for field, (go_type, wire, number, label) in go_fields.items():
            fields += 1
            assert mine[field] == (go_type, number, label), f"{name}.{field}"
            length_delimited = go_type in ("TYPE_STRING", "TYPE_BYTES", "TYPE_MESSAGE")
            assert WIRE[wire] == (2 if length_delimited else 0), f"{name}.{field}"
    status = next(f for f in ours["Response"].field if f.name == "status")
    assert status.type_name == ".google.rpc.Status"
    report(f"conformance: ttrpc envelope matches ttrpc 1.1.1 types.go ({fields} fields)")
