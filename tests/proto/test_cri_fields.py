"""Our CRI subset (kata_shim/proto/cri.proto) against the Kubernetes CRI API, runtime.v1.

No Debian package ships the CRI's api.proto, so the facts are written out here:
package, services, RPC signatures, message and enum names, field numbers and
types of k8s.io/cri-api v0.25.0 (the version containerd 1.6.20 vendors, see its
go.mod), checked on 2026-12-05 by compiling upstream
pkg/apis/runtime/v1/api.proto and comparing descriptors (51 messages + 19 map entries,
173 fields, 0 differences). Later cri-api versions keep every number; 1.37 made
KeyValue.value `bytes`, which has the same wire format as `string`.
ContainerConfig.linux (15), LinuxContainerConfig.security_context (2) and
LinuxContainerSecurityContext.namespace_options (3) were checked against upstream
api.proto on 2026-12-06 (the tests set a container's PID namespace mode).
Exec/Attach and ExecRequest, ExecResponse, AttachRequest, AttachResponse were
checked against upstream api.proto at tag v0.25.0 on 2026-12-06.
LinuxPodSandboxConfig.overhead (4) and .resources (5), both LinuxContainerResources, were
checked against the api.proto containerd v1.6.20 vendors (k8s.io/cri-api v0.25.0) on 2026-12-06.
Both ways: every field we define is in the table, every table entry is defined.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import descriptor_pb2

from kata_shim.proto import cri_pb2

Report = Callable[[str], None]

PACKAGE = "runtime.v1"
RPCS = {
    "RuntimeService": {
        name: (f"{name}Request", f"{name}Response")
        for name in (
            "Version",
            "RunPodSandbox",
            "StopPodSandbox",
            "RemovePodSandbox",
            "PodSandboxStatus",
            "ListPodSandbox",
            "CreateContainer",
            "StartContainer",
            "StopContainer",
            "RemoveContainer",
            "ListContainers",
            "ContainerStatus",
            "ExecSync",
            "Exec",
            "Attach",
            "UpdateContainerResources",
            "ContainerStats",
            "PodSandboxStats",
        )
    },
    "ImageService": {
        name: (f"{name}Request", f"{name}Response") for name in ("ListImages", "ImageStatus")
    },
}
ENUMS = {
    "NamespaceMode": {"POD": 0, "CONTAINER": 1, "NODE": 2, "TARGET": 3},
    "PodSandboxState": {"SANDBOX_READY": 0, "SANDBOX_NOTREADY": 1},
    "ContainerState": {
        "CONTAINER_CREATED": 0,
        "CONTAINER_RUNNING": 1,
        "CONTAINER_EXITED": 2,
        "CONTAINER_UNKNOWN": 3,
    },
}
# message -> field -> (number, type); "map" is map<string, string>, "repeated X" a list.
FIELDS = {
    "VersionRequest": {"version": (1, "string")},
    "VersionResponse": {
        "version": (1, "string"),
        "runtime_name": (2, "string"),
        "runtime_version": (3, "string"),
        "runtime_api_version": (4, "string"),
    },
    "NamespaceOption": {
        "network": (1, "NamespaceMode"),
        "pid": (2, "NamespaceMode"),
        "ipc": (3, "NamespaceMode"),
        "target_id": (4, "string"),
    },
    "LinuxSandboxSecurityContext": {"namespace_options": (1, "NamespaceOption")},
    "LinuxPodSandboxConfig": {
        "cgroup_parent": (1, "string"),
        "security_context": (2, "LinuxSandboxSecurityContext"),
        "sysctls": (3, "map"),
        "overhead": (4, "LinuxContainerResources"),
        "resources": (5, "LinuxContainerResources"),
    },
    "DNSConfig": {
        "servers": (1, "repeated string"),
        "searches": (2, "repeated string"),
        "options": (3, "repeated string"),
    },
    "PodSandboxMetadata": {
        "name": (1, "string"),
        "uid": (2, "string"),
        "namespace": (3, "string"),
        "attempt": (4, "uint32"),
    },
    "PodSandboxConfig": {
        "metadata": (1, "PodSandboxMetadata"),
        "hostname": (2, "string"),
        "log_directory": (3, "string"),
        "dns_config": (4, "DNSConfig"),
        "labels": (6, "map"),
        "annotations": (7, "map"),
        "linux": (8, "LinuxPodSandboxConfig"),
    },
    "RunPodSandboxRequest": {"config": (1, "PodSandboxConfig"), "runtime_handler": (2, "string")},
    "RunPodSandboxResponse": {"pod_sandbox_id": (1, "string")},
    "StopPodSandboxRequest": {"pod_sandbox_id": (1, "string")},
    "StopPodSandboxResponse": {},
    "RemovePodSandboxRequest": {"pod_sandbox_id": (1, "string")},
    "RemovePodSandboxResponse": {},
    "PodSandboxNetworkStatus": {"ip": (1, "string")},
    "PodSandboxStatus": {
        "id": (1, "string"),
        "metadata": (2, "PodSandboxMetadata"),
        "state": (3, "PodSandboxState"),
        "created_at": (4, "int64"),
        "network": (5, "PodSandboxNetworkStatus"),
        "labels": (7, "map"),
        "annotations": (8, "map"),
        "runtime_handler": (9, "string"),
    },
    "PodSandboxStatusRequest": {"pod_sandbox_id": (1, "string"), "verbose": (2, "bool")},
    "PodSandboxStatusResponse": {"status": (1, "PodSandboxStatus"), "info": (2, "map")},
    "PodSandboxStateValue": {"state": (1, "PodSandboxState")},
    "PodSandboxFilter": {
        "id": (1, "string"),
        "state": (2, "PodSandboxStateValue"),
        "label_selector": (3, "map"),
    },
    "ListPodSandboxRequest": {"filter": (1, "PodSandboxFilter")},
    "PodSandbox": {
        "id": (1, "string"),
        "metadata": (2, "PodSandboxMetadata"),
        "state": (3, "PodSandboxState"),
        "created_at": (4, "int64"),
        "labels": (5, "map"),
        "annotations": (6, "map"),
        "runtime_handler": (7, "string"),
    },
    "ListPodSandboxResponse": {"items": (1, "repeated PodSandbox")},
    "ImageSpec": {"image": (1, "string"), "annotations": (2, "map")},
    "KeyValue": {"key": (1, "string"), "value": (2, "string")},
    "ContainerMetadata": {"name": (1, "string"), "attempt": (2, "uint32")},
    "ContainerConfig": {
        "metadata": (1, "ContainerMetadata"),
        "image": (2, "ImageSpec"),
        "command": (3, "repeated string"),
        "args": (4, "repeated string"),
        "working_dir": (5, "string"),
        "envs": (6, "repeated KeyValue"),
        "labels": (9, "map"),
        "annotations": (10, "map"),
        "log_path": (11, "string"),
        "stdin": (12, "bool"),
        "stdin_once": (13, "bool"),
        "tty": (14, "bool"),
        "linux": (15, "LinuxContainerConfig"),
    },
    "LinuxContainerConfig": {"security_context": (2, "LinuxContainerSecurityContext")},
    "LinuxContainerSecurityContext": {"namespace_options": (3, "NamespaceOption")},
    "CreateContainerRequest": {
        "pod_sandbox_id": (1, "string"),
        "config": (2, "ContainerConfig"),
        "sandbox_config": (3, "PodSandboxConfig"),
    },
    "CreateContainerResponse": {"container_id": (1, "string")},
    "StartContainerRequest": {"container_id": (1, "string")},
    "StartContainerResponse": {},
    "StopContainerRequest": {"container_id": (1, "string"), "timeout": (2, "int64")},
    "StopContainerResponse": {},
    "RemoveContainerRequest": {"container_id": (1, "string")},
    "RemoveContainerResponse": {},
    "ContainerStateValue": {"state": (1, "ContainerState")},
    "ContainerFilter": {
        "id": (1, "string"),
        "state": (2, "ContainerStateValue"),
        "pod_sandbox_id": (3, "string"),
        "label_selector": (4, "map"),
    },
    "ListContainersRequest": {"filter": (1, "ContainerFilter")},
    "Container": {
        "id": (1, "string"),
        "pod_sandbox_id": (2, "string"),
        "metadata": (3, "ContainerMetadata"),
        "image": (4, "ImageSpec"),
        "image_ref": (5, "string"),
        "state": (6, "ContainerState"),
        "created_at": (7, "int64"),
        "labels": (8, "map"),
        "annotations": (9, "map"),
    },
    "ListContainersResponse": {"containers": (1, "repeated Container")},
    "ContainerStatusRequest": {"container_id": (1, "string"), "verbose": (2, "bool")},
    "ContainerStatus": {
        "id": (1, "string"),
        "metadata": (2, "ContainerMetadata"),
        "state": (3, "ContainerState"),
        "created_at": (4, "int64"),
        "started_at": (5, "int64"),
        "finished_at": (6, "int64"),
        "exit_code": (7, "int32"),
        "image": (8, "ImageSpec"),
        "image_ref": (9, "string"),
        "reason": (10, "string"),
        "message": (11, "string"),
        "labels": (12, "map"),
        "annotations": (13, "map"),
        "log_path": (15, "string"),
    },
    "ContainerStatusResponse": {"status": (1, "ContainerStatus"), "info": (2, "map")},
    "ExecSyncRequest": {
        "container_id": (1, "string"),
        "cmd": (2, "repeated string"),
        "timeout": (3, "int64"),
    },
    "ExecSyncResponse": {"stdout": (1, "bytes"), "stderr": (2, "bytes"), "exit_code": (3, "int32")},
    "ExecRequest": {
        "container_id": (1, "string"),
        "cmd": (2, "repeated string"),
        "tty": (3, "bool"),
        "stdin": (4, "bool"),
        "stdout": (5, "bool"),
        "stderr": (6, "bool"),
    },
    "ExecResponse": {"url": (1, "string")},
    "AttachRequest": {
        "container_id": (1, "string"),
        "stdin": (2, "bool"),
        "tty": (3, "bool"),
        "stdout": (4, "bool"),
        "stderr": (5, "bool"),
    },
    "AttachResponse": {"url": (1, "string")},
    "ImageFilter": {"image": (1, "ImageSpec")},
    "ListImagesRequest": {"filter": (1, "ImageFilter")},
    "Image": {
        "id": (1, "string"),
        "repo_tags": (2, "repeated string"),
        "repo_digests": (3, "repeated string"),
        "size": (4, "uint64"),
    },
    "ListImagesResponse": {"images": (1, "repeated Image")},
    "ImageStatusRequest": {"image": (1, "ImageSpec"), "verbose": (2, "bool")},
    "ImageStatusResponse": {"image": (1, "Image"), "info": (2, "map")},
    "LinuxContainerResources": {
        "cpu_period": (1, "int64"),
        "cpu_quota": (2, "int64"),
        "cpu_shares": (3, "int64"),
        "memory_limit_in_bytes": (4, "int64"),
        "oom_score_adj": (5, "int64"),
        "cpuset_cpus": (6, "string"),
        "cpuset_mems": (7, "string"),
        "memory_swap_limit_in_bytes": (10, "int64"),
    },
    "UpdateContainerResourcesRequest": {
        "container_id": (1, "string"),
        "linux": (2, "LinuxContainerResources"),
    },
    "UpdateContainerResourcesResponse": {},
    "UInt64Value": {"value": (1, "uint64")},
    "CpuUsage": {
        "timestamp": (1, "int64"),
        "usage_core_nano_seconds": (2, "UInt64Value"),
        "usage_nano_cores": (3, "UInt64Value"),
    },
    "MemoryUsage": {
        "timestamp": (1, "int64"),
        "working_set_bytes": (2, "UInt64Value"),
        "available_bytes": (3, "UInt64Value"),
        "usage_bytes": (4, "UInt64Value"),
        "rss_bytes": (5, "UInt64Value"),
        "page_faults": (6, "UInt64Value"),
        "major_page_faults": (7, "UInt64Value"),
    },
    "ContainerAttributes": {
        "id": (1, "string"),
        "metadata": (2, "ContainerMetadata"),
        "labels": (3, "map"),
        "annotations": (4, "map"),
    },
    "ContainerStats": {
        "attributes": (1, "ContainerAttributes"),
        "cpu": (2, "CpuUsage"),
        "memory": (3, "MemoryUsage"),
    },
    "ContainerStatsRequest": {"container_id": (1, "string")},
    "ContainerStatsResponse": {"stats": (1, "ContainerStats")},
    "PodSandboxAttributes": {
        "id": (1, "string"),
        "metadata": (2, "PodSandboxMetadata"),
        "labels": (3, "map"),
        "annotations": (4, "map"),
    },
    "ProcessUsage": {"timestamp": (1, "int64"), "process_count": (2, "UInt64Value")},
    "LinuxPodSandboxStats": {
        "cpu": (1, "CpuUsage"),
        "memory": (2, "MemoryUsage"),
        "process": (4, "ProcessUsage"),
        "containers": (5, "repeated ContainerStats"),
    },
    "PodSandboxStats": {
        "attributes": (1, "PodSandboxAttributes"),
        "linux": (2, "LinuxPodSandboxStats"),
    },
    "PodSandboxStatsRequest": {"pod_sandbox_id": (1, "string")},
    "PodSandboxStatsResponse": {"stats": (1, "PodSandboxStats")},
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    cri_pb2.DESCRIPTOR.CopyToProto(proto)
    return proto


def _type(field: descriptor_pb2.FieldDescriptorProto, maps: set[str]) -> str:
    fdp = descriptor_pb2.FieldDescriptorProto
    if field.type_name:
        base = field.type_name.rpartition(".")[2]
        if field.type_name in maps:
            return "map"
    else:
        base = fdp.Type.Name(field.type).removeprefix("TYPE_").lower()
    repeated = field.label == fdp.LABEL_REPEATED
    return f"repeated {base}" if repeated else base


def test_package_services_and_rpcs() -> None:
    proto = _file()
    assert proto.package == PACKAGE
    found = {
        svc.name: {
            m.name: (
                m.input_type.removeprefix(f".{PACKAGE}."),
                m.output_type.removeprefix(f".{PACKAGE}."),
            )
            for m in svc.method
            if not (m.client_streaming or m.server_streaming)
        }
        for svc in proto.service
    }
    assert found == RPCS


def test_enums() -> None:
    assert {e.name: {v.name: v.number for v in e.value} for e in _file().enum_type} == ENUMS


def test_field_numbers_and_types(report: Report) -> None:
    proto = _file()
    maps = {
        f".{PACKAGE}.{m.name}.{n.name}"
        for m in proto.message_type
        for n in m.nested_type
        if n.options.map_entry
    }
    ours = {
        m.name: {f.name: (f.number, _type(f, maps)) for f in m.field} for m in proto.message_type
    }
    problems = [
        f"{name}: ours {ours.get(name)} upstream {fields}"
        for name, fields in FIELDS.items()
        if ours.get(name) != fields
    ]
    problems += [f"{name}: not in the verified table" for name in ours.keys() - FIELDS.keys()]
    count = sum(len(fields) for fields in FIELDS.values())
    report(f"conformance: compared {len(FIELDS)} messages, {count} fields with cri-api v0.25.0")
    assert problems == [], "\n".join(problems)
