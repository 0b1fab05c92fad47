"""Kata agent messages: field numbers and types checked against a table of facts.

Kata's agent .proto files are not packaged for Debian, so the facts (from Kata's
protocol, shim-v2-contract.md §5.2) are written down here and every entry is
compared with our generated descriptors.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from kata_shim.proto import agent_pb2, health_pb2, oci_pb2, types_pb2

S, B, U32, I32, I64, U64, BOOL, MSG, ENUM = (
    F.TYPE_STRING,
    F.TYPE_BYTES,
    F.TYPE_UINT32,
    F.TYPE_INT32,
    F.TYPE_INT64,
    F.TYPE_UINT64,
    F.TYPE_BOOL,
    F.TYPE_MESSAGE,
    F.TYPE_ENUM,
)

FACTS: dict[str, dict[str, tuple[int, int]]] = {
    "grpc.CreateSandboxRequest": {
        "hostname": (1, S),
        "dns": (2, S),
        "storages": (3, MSG),
        "sandbox_pidns": (4, BOOL),
        "sandbox_id": (5, S),
        "guest_hook_path": (6, S),
        "kernel_modules": (7, MSG),
    },
    "grpc.CreateContainerRequest": {
        "container_id": (1, S),
        "exec_id": (2, S),
        "string_user": (3, MSG),
        "devices": (4, MSG),
        "storages": (5, MSG),
        "OCI": (6, MSG),
        "sandbox_pidns": (7, BOOL),
        "shared_mounts": (8, MSG),
    },
    "grpc.StringUser": {"uid": (1, S), "gid": (2, S), "additionalGids": (3, S)},
    "grpc.Device": {
        "id": (1, S),
        "type": (2, S),
        "vm_path": (3, S),
        "container_path": (4, S),
        "options": (5, S),
    },
    "grpc.Storage": {
        "driver": (1, S),
        "driver_options": (2, S),
        "source": (3, S),
        "fstype": (4, S),
        "options": (5, S),
        "mount_point": (6, S),
        "fs_group": (7, MSG),
    },
    "grpc.KernelModule": {"name": (1, S), "parameters": (2, S)},
    "grpc.StartContainerRequest": {"container_id": (1, S)},
    "grpc.RemoveContainerRequest": {"container_id": (1, S), "timeout": (2, U32)},
    "grpc.ExecProcessRequest": {
        "container_id": (1, S),
        "exec_id": (2, S),
        "string_user": (3, MSG),
        "process": (4, MSG),
    },
    "grpc.SignalProcessRequest": {"container_id": (1, S), "exec_id": (2, S), "signal": (3, U32)},
    "grpc.WaitProcessRequest": {"container_id": (1, S), "exec_id": (2, S)},
    "grpc.WaitProcessResponse": {"status": (1, I32)},
    "grpc.WriteStreamRequest": {"container_id": (1, S), "exec_id": (2, S), "data": (3, B)},
    "grpc.WriteStreamResponse": {"len": (1, U32)},
    "grpc.ReadStreamRequest": {"container_id": (1, S), "exec_id": (2, S), "len": (3, U32)},
    "grpc.ReadStreamResponse": {"data": (1, B)},
    "grpc.CloseStdinRequest": {"container_id": (1, S), "exec_id": (2, S)},
    "grpc.TtyWinResizeRequest": {
        "container_id": (1, S),
        "exec_id": (2, S),
        "row": (3, U32),
        "column": (4, U32),
    },
    "grpc.UpdateContainerRequest": {"container_id": (1, S), "resources": (2, MSG)},
    "grpc.StatsContainerRequest": {"container_id": (1, S)},
    "grpc.StatsContainerResponse": {"cgroup_stats": (1, MSG), "network_stats": (2, MSG)},
    "grpc.CgroupStats": {
        "cpu_stats": (1, MSG),
        "memory_stats": (2, MSG),
        "pids_stats": (3, MSG),
        "blkio_stats": (4, MSG),
        "hugetlb_stats": (5, MSG),
    },
    "grpc.PauseContainerRequest": {"container_id": (1, S)},
    "grpc.ResumeContainerRequest": {"container_id": (1, S)},
    "grpc.OOMEvent": {"container_id": (1, S)},
    "grpc.CheckRequest": {"service": (1, S)},
    "grpc.HealthCheckResponse": {"status": (1, ENUM)},
    "grpc.VersionCheckResponse": {"grpc_version": (1, S), "agent_version": (2, S)},
    "grpc.Spec": {
        "Version": (1, S),
        "Process": (2, MSG),
        "Root": (3, MSG),
        "Hostname": (4, S),
        "Mounts": (5, MSG),
        "Hooks": (6, MSG),
        "Annotations": (7, MSG),
        "Linux": (8, MSG),
        "Solaris": (9, MSG),
        "Windows": (10, MSG),
    },
    "grpc.Process": {
        "Terminal": (1, BOOL),
        "ConsoleSize": (2, MSG),
        "User": (3, MSG),
        "Args": (4, S),
        "Env": (5, S),
        "Cwd": (6, S),
        "Capabilities": (7, MSG),
        "Rlimits": (8, MSG),
        "NoNewPrivileges": (9, BOOL),
        "ApparmorProfile": (10, S),
        "OOMScoreAdj": (11, I64),
        "SelinuxLabel": (12, S),
    },
    "grpc.Root": {"Path": (1, S), "Readonly": (2, BOOL)},
    "grpc.Mount": {"destination": (1, S), "source": (2, S), "type": (3, S), "options": (4, S)},
    "grpc.Box": {"Height": (1, U32), "Width": (2, U32)},
    "grpc.User": {"UID": (1, U32), "GID": (2, U32), "AdditionalGids": (3, U32), "Username": (4, S)},
    "types.Interface": {
        "device": (1, S),
        "name": (2, S),
        "IPAddresses": (3, MSG),
        "mtu": (4, U64),
        "hwAddr": (5, S),
        "devicePath": (6, S),
        "type": (7, S),
        "raw_flags": (8, U32),
    },
    "types.Route": {
        "dest": (1, S),
        "gateway": (2, S),
        "device": (3, S),
        "source": (4, S),
        "scope": (5, U32),
        "family": (6, ENUM),
        "flags": (7, U32),
    },
    "types.ARPNeighbor": {
        "toIPAddress": (1, MSG),
        "device": (2, S),
        "lladdr": (3, S),
        "state": (4, I32),
        "flags": (5, I32),
    },
    "types.IPAddress": {"family": (1, ENUM), "address": (2, S), "mask": (3, S)},
}

MODULES = (agent_pb2, health_pb2, oci_pb2, types_pb2)


def _find(full_name: str):
    for module in MODULES:
        pool = module.DESCRIPTOR.pool
        try:
            return pool.FindMessageTypeByName(full_name)
        except KeyError:
            continue
    raise AssertionError(f"{full_name} not defined")


def test_agent_facts() -> None:
    problems = []
    count = 0
    for message_name, fields in FACTS.items():
        descriptor = _find(message_name)
        for field_name, (number, field_type) in fields.items():
            count += 1
            field = descriptor.fields_by_name.get(field_name)
            if field is None:
                problems.append(f"{message_name}.{field_name} missing")
            elif (field.number, field.type) != (number, field_type):
                problems.append(f"{message_name}.{field_name}: {(field.number, field.type)}")
    print(f"agent facts: checked {len(FACTS)} messages, {count} fields")
    assert problems == []


def test_services_and_package_names() -> None:
    agent = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    assert agent.full_name == "grpc.AgentService"
    for rpc in ("CreateContainer", "ReadStdout", "WaitProcess", "GetOOMEvent", "CreateSandbox"):
        assert rpc in agent.methods_by_name
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    assert health.full_name == "grpc.Health"
    assert health_pb2.HealthCheckResponse.SERVING == 1
