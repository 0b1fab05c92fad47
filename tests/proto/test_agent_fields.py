"""Kata agent protocol: our agent, health, oci, csi and types messages against facts.

Kata's agent .proto files are not packaged for Debian, so the facts are written
down here: for every message, every field's name, number and type (in .proto
spelling, with `repeated`/`optional`/`map<>`), every enum value, and the request
and response of every AgentService and Health RPC. They were taken from
kata-containers/kata-containers src/libs/protocols/protos/{agent,csi,oci,types,
health}.proto on the main branch (2026) and agree with shim-v2-contract.md §5.2.
Kata 3.2.0 differs only by lacking things (GetDiagnosticData, the MemAgent RPCs,
AddSwapPath, SetPolicy, SharedMount, the *_port passfd fields, Storage.shared,
AgentDetails.extra_features, Route.flags and Route.mtu) and by naming
Interface field 6 `pciPath` (same number and type, so the same bytes).

The check is two-way: a fact our .proto does not honour fails, and so does a
message, field, enum value or RPC we define that is not in the facts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
from google.protobuf import descriptor_pb2

FDP = descriptor_pb2.FieldDescriptorProto
MODULES = ("agent", "csi", "health", "oci", "types")
SCALARS = {
    FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes",
    FDP.TYPE_BOOL: "bool",
    FDP.TYPE_INT32: "int32",
    FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT32: "uint32",
    FDP.TYPE_UINT64: "uint64",
    FDP.TYPE_DOUBLE: "double",
    FDP.TYPE_FLOAT: "float",
}
EMPTY = "google.protobuf.Empty"
Report = Callable[[str], None]  # the `report` fixture of tests/proto/conftest.py

# full message name -> {field name: (number, type as written in .proto)}
FIELDS: dict[str, dict[str, tuple[int, str]]] = {
    # types.proto
    "types.IPAddress": {
        "family": (1, "types.IPFamily"),
        "address": (2, "string"),
        "mask": (3, "string"),
    },
    "types.Interface": {
        "device": (1, "string"),
        "name": (2, "string"),
        "IPAddresses": (3, "repeated types.IPAddress"),
        "mtu": (4, "uint64"),
        "hwAddr": (5, "string"),
        "devicePath": (6, "string"),
        "type": (7, "string"),
        "raw_flags": (8, "uint32"),
    },
    "types.Route": {
        "dest": (1, "string"),
        "gateway": (2, "string"),
        "device": (3, "string"),
        "source": (4, "string"),
        "scope": (5, "uint32"),
        "family": (6, "types.IPFamily"),
        "flags": (7, "uint32"),
        "mtu": (8, "uint32"),
    },
    "types.ARPNeighbor": {
        "toIPAddress": (1, "types.IPAddress"),
        "device": (2, "string"),
        "lladdr": (3, "string"),
        "state": (4, "int32"),
        "flags": (5, "int32"),
    },
    # csi.proto
    "grpc.VolumeStatsResponse": {
        "usage": (1, "repeated grpc.VolumeUsage"),
        "volume_condition": (2, "grpc.VolumeCondition"),
    },
    "grpc.VolumeUsage": {
        "available": (1, "uint64"),
        "total": (2, "uint64"),
        "used": (3, "uint64"),
        "unit": (4, "grpc.VolumeUsage.Unit"),
    },
    "grpc.VolumeCondition": {"abnormal": (1, "bool"), "message": (2, "string")},
    # oci.proto
    "grpc.Spec": {
        "Version": (1, "string"),
        "Process": (2, "grpc.Process"),
        "Root": (3, "grpc.Root"),
        "Hostname": (4, "string"),
        "Mounts": (5, "repeated grpc.Mount"),
        "Hooks": (6, "grpc.Hooks"),
        "Annotations": (7, "map<string, string>"),
        "Linux": (8, "grpc.Linux"),
        "Solaris": (9, "grpc.Solaris"),
        "Windows": (10, "grpc.Windows"),
    },
    "grpc.Process": {
        "Terminal": (1, "bool"),
        "ConsoleSize": (2, "grpc.Box"),
        "User": (3, "grpc.User"),
        "Args": (4, "repeated string"),
        "Env": (5, "repeated string"),
        "Cwd": (6, "string"),
        "Capabilities": (7, "grpc.LinuxCapabilities"),
        "Rlimits": (8, "repeated grpc.POSIXRlimit"),
        "NoNewPrivileges": (9, "bool"),
        "ApparmorProfile": (10, "string"),
        "OOMScoreAdj": (11, "int64"),
        "SelinuxLabel": (12, "string"),
    },
    "grpc.Box": {"Height": (1, "uint32"), "Width": (2, "uint32")},
    "grpc.User": {
        "UID": (1, "uint32"),
        "GID": (2, "uint32"),
        "AdditionalGids": (3, "repeated uint32"),
        "Username": (4, "string"),
    },
    "grpc.LinuxCapabilities": {
        "Bounding": (1, "repeated string"),
        "Effective": (2, "repeated string"),
        "Inheritable": (3, "repeated string"),
        "Permitted": (4, "repeated string"),
        "Ambient": (5, "repeated string"),
    },
    "grpc.POSIXRlimit": {"Type": (1, "string"), "Hard": (2, "uint64"), "Soft": (3, "uint64")},
    "grpc.Mount": {
        "destination": (1, "string"),
        "source": (2, "string"),
        "type": (3, "string"),
        "options": (4, "repeated string"),
    },
    "grpc.Root": {"Path": (1, "string"), "Readonly": (2, "bool")},
    "grpc.Hooks": {
        "Prestart": (1, "repeated grpc.Hook"),
        "Poststart": (2, "repeated grpc.Hook"),
        "Poststop": (3, "repeated grpc.Hook"),
        "CreateRuntime": (4, "repeated grpc.Hook"),
        "CreateContainer": (5, "repeated grpc.Hook"),
        "StartContainer": (6, "repeated grpc.Hook"),
    },
    "grpc.Hook": {
        "Path": (1, "string"),
        "Args": (2, "repeated string"),
        "Env": (3, "repeated string"),
        "Timeout": (4, "int64"),
    },
    "grpc.Linux": {
        "UIDMappings": (1, "repeated grpc.LinuxIDMapping"),
        "GIDMappings": (2, "repeated grpc.LinuxIDMapping"),
        "Sysctl": (3, "map<string, string>"),
        "Resources": (4, "grpc.LinuxResources"),
        "CgroupsPath": (5, "string"),
        "Namespaces": (6, "repeated grpc.LinuxNamespace"),
        "Devices": (7, "repeated grpc.LinuxDevice"),
        "Seccomp": (8, "grpc.LinuxSeccomp"),
        "RootfsPropagation": (9, "string"),
        "MaskedPaths": (10, "repeated string"),
        "ReadonlyPaths": (11, "repeated string"),
        "MountLabel": (12, "string"),
        "IntelRdt": (13, "grpc.LinuxIntelRdt"),
    },
    "grpc.Windows": {"dummy": (1, "string")},
    "grpc.Solaris": {"dummy": (1, "string")},
    "grpc.LinuxIDMapping": {
        "HostID": (1, "uint32"),
        "ContainerID": (2, "uint32"),
        "Size": (3, "uint32"),
    },
    "grpc.LinuxNamespace": {"Type": (1, "string"), "Path": (2, "string")},
    "grpc.LinuxDevice": {
        "Path": (1, "string"),
        "Type": (2, "string"),
        "Major": (3, "int64"),
        "Minor": (4, "int64"),
        "FileMode": (5, "uint32"),
        "UID": (6, "uint32"),
        "GID": (7, "uint32"),
    },
    "grpc.LinuxResources": {
        "Devices": (1, "repeated grpc.LinuxDeviceCgroup"),
        "Memory": (2, "grpc.LinuxMemory"),
        "CPU": (3, "grpc.LinuxCPU"),
        "Pids": (4, "grpc.LinuxPids"),
        "BlockIO": (5, "grpc.LinuxBlockIO"),
        "HugepageLimits": (6, "repeated grpc.LinuxHugepageLimit"),
        "Network": (7, "grpc.LinuxNetwork"),
    },
    "grpc.LinuxMemory": {
        "Limit": (1, "int64"),
        "Reservation": (2, "int64"),
        "Swap": (3, "int64"),
        "Kernel": (4, "int64"),
        "KernelTCP": (5, "int64"),
        "Swappiness": (6, "uint64"),
        "DisableOOMKiller": (7, "bool"),
    },
    "grpc.LinuxCPU": {
        "Shares": (1, "uint64"),
        "Quota": (2, "int64"),
        "Period": (3, "uint64"),
        "RealtimeRuntime": (4, "int64"),
        "RealtimePeriod": (5, "uint64"),
        "Cpus": (6, "string"),
        "Mems": (7, "string"),
    },
    "grpc.LinuxWeightDevice": {
        "Major": (1, "int64"),
        "Minor": (2, "int64"),
        "Weight": (3, "uint32"),
        "LeafWeight": (4, "uint32"),
    },
    "grpc.LinuxThrottleDevice": {
        "Major": (1, "int64"),
        "Minor": (2, "int64"),
        "Rate": (3, "uint64"),
    },
    "grpc.LinuxBlockIO": {
        "Weight": (1, "uint32"),
        "LeafWeight": (2, "uint32"),
        "WeightDevice": (3, "repeated grpc.LinuxWeightDevice"),
        "ThrottleReadBpsDevice": (4, "repeated grpc.LinuxThrottleDevice"),
        "ThrottleWriteBpsDevice": (5, "repeated grpc.LinuxThrottleDevice"),
        "ThrottleReadIOPSDevice": (6, "repeated grpc.LinuxThrottleDevice"),
        "ThrottleWriteIOPSDevice": (7, "repeated grpc.LinuxThrottleDevice"),
    },
    "grpc.LinuxPids": {"Limit": (1, "int64")},
    "grpc.LinuxDeviceCgroup": {
        "Allow": (1, "bool"),
        "Type": (2, "string"),
        "Major": (3, "int64"),
        "Minor": (4, "int64"),
        "Access": (5, "string"),
    },
    "grpc.LinuxNetwork": {
        "ClassID": (1, "uint32"),
        "Priorities": (2, "repeated grpc.LinuxInterfacePriority"),
    },
    "grpc.LinuxHugepageLimit": {"Pagesize": (1, "string"), "Limit": (2, "uint64")},
    "grpc.LinuxInterfacePriority": {"Name": (1, "string"), "Priority": (2, "uint32")},
    "grpc.LinuxSeccomp": {
        "DefaultAction": (1, "string"),
        "Architectures": (2, "repeated string"),
        "Flags": (3, "repeated string"),
        "Syscalls": (4, "repeated grpc.LinuxSyscall"),
    },
    "grpc.LinuxSeccompArg": {
        "Index": (1, "uint64"),
        "Value": (2, "uint64"),
        "ValueTwo": (3, "uint64"),
        "Op": (4, "string"),
    },
    "grpc.LinuxSyscall": {
        "Names": (1, "repeated string"),
        "Action": (2, "string"),
        "errnoret": (3, "uint32"),
        "Args": (4, "repeated grpc.LinuxSeccompArg"),
    },
    "grpc.LinuxIntelRdt": {"L3CacheSchema": (1, "string")},
    # health.proto
    "grpc.CheckRequest": {"service": (1, "string")},
    "grpc.HealthCheckResponse": {"status": (1, "grpc.HealthCheckResponse.ServingStatus")},
    "grpc.VersionCheckResponse": {"grpc_version": (1, "string"), "agent_version": (2, "string")},
    # agent.proto
    "grpc.CreateContainerRequest": {
        "container_id": (1, "string"),
        "exec_id": (2, "string"),
        "string_user": (3, "grpc.StringUser"),
        "devices": (4, "repeated grpc.Device"),
        "storages": (5, "repeated grpc.Storage"),
        "OCI": (6, "grpc.Spec"),
        "sandbox_pidns": (7, "bool"),
        "shared_mounts": (8, "repeated grpc.SharedMount"),
        "stdin_port": (9, "uint32"),
        "stdout_port": (10, "uint32"),
        "stderr_port": (11, "uint32"),
    },
    "grpc.StartContainerRequest": {"container_id": (1, "string")},
    "grpc.RemoveContainerRequest": {"container_id": (1, "string"), "timeout": (2, "uint32")},
    "grpc.ExecProcessRequest": {
        "container_id": (1, "string"),
        "exec_id": (2, "string"),
        "string_user": (3, "grpc.StringUser"),
        "process": (4, "grpc.Process"),
        "stdin_port": (5, "uint32"),
        "stdout_port": (6, "uint32"),
        "stderr_port": (7, "uint32"),
    },
    "grpc.SignalProcessRequest": {
        "container_id": (1, "string"),
        "exec_id": (2, "string"),
        "signal": (3, "uint32"),
    },
    "grpc.WaitProcessRequest": {"container_id": (1, "string"), "exec_id": (2, "string")},
    "grpc.WaitProcessResponse": {"status": (1, "int32")},
    "grpc.UpdateContainerRequest": {
        "container_id": (1, "string"),
        "resources": (2, "grpc.LinuxResources"),
    },
    "grpc.StatsContainerRequest": {"container_id": (1, "string")},
    "grpc.PauseContainerRequest": {"container_id": (1, "string")},
    "grpc.ResumeContainerRequest": {"container_id": (1, "string")},
    "grpc.CpuUsage": {
        "total_usage": (1, "uint64"),
        "percpu_usage": (2, "repeated uint64"),
        "usage_in_kernelmode": (3, "uint64"),
        "usage_in_usermode": (4, "uint64"),
    },
    "grpc.ThrottlingData": {
        "periods": (1, "uint64"),
        "throttled_periods": (2, "uint64"),
        "throttled_time": (3, "uint64"),
    },
    "grpc.CpuStats": {
        "cpu_usage": (1, "grpc.CpuUsage"),
        "throttling_data": (2, "grpc.ThrottlingData"),
    },
    "grpc.PidsStats": {"current": (1, "uint64"), "limit": (2, "uint64")},
    "grpc.MemoryData": {
        "usage": (1, "uint64"),
        "max_usage": (2, "uint64"),
        "failcnt": (3, "uint64"),
        "limit": (4, "uint64"),
    },
    "grpc.MemoryStats": {
        "cache": (1, "uint64"),
        "usage": (2, "grpc.MemoryData"),
        "swap_usage": (3, "grpc.MemoryData"),
        "kernel_usage": (4, "grpc.MemoryData"),
        "use_hierarchy": (5, "bool"),
        "stats": (6, "map<string, uint64>"),
    },
    "grpc.BlkioStatsEntry": {
        "major": (1, "uint64"),
        "minor": (2, "uint64"),
        "op": (3, "string"),
        "value": (4, "uint64"),
    },
    "grpc.BlkioStats": {
        "io_service_bytes_recursive": (1, "repeated grpc.BlkioStatsEntry"),
        "io_serviced_recursive": (2, "repeated grpc.BlkioStatsEntry"),
        "io_queued_recursive": (3, "repeated grpc.BlkioStatsEntry"),
        "io_service_time_recursive": (4, "repeated grpc.BlkioStatsEntry"),
        "io_wait_time_recursive": (5, "repeated grpc.BlkioStatsEntry"),
        "io_merged_recursive": (6, "repeated grpc.BlkioStatsEntry"),
        "io_time_recursive": (7, "repeated grpc.BlkioStatsEntry"),
        "sectors_recursive": (8, "repeated grpc.BlkioStatsEntry"),
    },
    "grpc.HugetlbStats": {
        "usage": (1, "uint64"),
        "max_usage": (2, "uint64"),
        "failcnt": (3, "uint64"),
    },
    "grpc.CgroupStats": {
        "cpu_stats": (1, "grpc.CpuStats"),
        "memory_stats": (2, "grpc.MemoryStats"),
        "pids_stats": (3, "grpc.PidsStats"),
        "blkio_stats": (4, "grpc.BlkioStats"),
        "hugetlb_stats": (5, "map<string, grpc.HugetlbStats>"),
    },
    "grpc.NetworkStats": {
        "name": (1, "string"),
        "rx_bytes": (2, "uint64"),
        "rx_packets": (3, "uint64"),
        "rx_errors": (4, "uint64"),
        "rx_dropped": (5, "uint64"),
        "tx_bytes": (6, "uint64"),
        "tx_packets": (7, "uint64"),
        "tx_errors": (8, "uint64"),
        "tx_dropped": (9, "uint64"),
    },
    "grpc.StatsContainerResponse": {
        "cgroup_stats": (1, "grpc.CgroupStats"),
        "network_stats": (2, "repeated grpc.NetworkStats"),
    },
    "grpc.WriteStreamRequest": {
        "container_id": (1, "string"),
        "exec_id": (2, "string"),
        "data": (3, "bytes"),
    },
    "grpc.WriteStreamResponse": {"len": (1, "uint32")},
    "grpc.ReadStreamRequest": {
        "container_id": (1, "string"),
        "exec_id": (2, "string"),
        "len": (3, "uint32"),
    },
    "grpc.ReadStreamResponse": {"data": (1, "bytes")},
    "grpc.CloseStdinRequest": {"container_id": (1, "string"), "exec_id": (2, "string")},
    "grpc.TtyWinResizeRequest": {
        "container_id": (1, "string"),
        "exec_id": (2, "string"),
        "row": (3, "uint32"),
        "column": (4, "uint32"),
    },
    "grpc.KernelModule": {"name": (1, "string"), "parameters": (2, "repeated string")},
    "grpc.CreateSandboxRequest": {
        "hostname": (1, "string"),
        "dns": (2, "repeated string"),
        "storages": (3, "repeated grpc.Storage"),
        "sandbox_pidns": (4, "bool"),
        "sandbox_id": (5, "string"),
        "guest_hook_path": (6, "string"),
        "kernel_modules": (7, "repeated grpc.KernelModule"),
    },
    "grpc.DestroySandboxRequest": {},
    "grpc.RemoveStaleVirtiofsShareMountsRequest": {},
    "grpc.Interfaces": {"Interfaces": (1, "repeated types.Interface")},
    "grpc.Routes": {"Routes": (1, "repeated types.Route")},
    "grpc.UpdateInterfaceRequest": {"interface": (1, "types.Interface")},
    "grpc.UpdateRoutesRequest": {"routes": (1, "grpc.Routes")},
    "grpc.UpdateEphemeralMountsRequest": {"storages": (1, "repeated grpc.Storage")},
    "grpc.ListInterfacesRequest": {},
    "grpc.ListRoutesRequest": {},
    "grpc.ARPNeighbors": {"ARPNeighbors": (1, "repeated types.ARPNeighbor")},
    "grpc.AddARPNeighborsRequest": {"neighbors": (1, "grpc.ARPNeighbors")},
    "grpc.GetIPTablesRequest": {"is_ipv6": (1, "bool")},
    "grpc.GetIPTablesResponse": {"data": (1, "bytes")},
    "grpc.SetIPTablesRequest": {"is_ipv6": (1, "bool"), "data": (2, "bytes")},
    "grpc.SetIPTablesResponse": {"data": (1, "bytes")},
    "grpc.OnlineCPUMemRequest": {
        "wait": (1, "bool"),
        "nb_cpus": (2, "uint32"),
        "cpu_only": (3, "bool"),
    },
    "grpc.ReseedRandomDevRequest": {"data": (2, "bytes")},
    "grpc.AgentDetails": {
        "version": (1, "string"),
        "init_daemon": (2, "bool"),
        "device_handlers": (3, "repeated string"),
        "storage_handlers": (4, "repeated string"),
        "supports_seccomp": (5, "bool"),
        "extra_features": (6, "repeated string"),
    },
    "grpc.GuestDetailsRequest": {"mem_block_size": (1, "bool"), "mem_hotplug_probe": (2, "bool")},
    "grpc.GuestDetailsResponse": {
        "mem_block_size_bytes": (1, "uint64"),
        "agent_details": (2, "grpc.AgentDetails"),
        "support_mem_hotplug_probe": (3, "bool"),
    },
    "grpc.MemHotplugByProbeRequest": {"memHotplugProbeAddr": (1, "repeated uint64")},
    "grpc.SetGuestDateTimeRequest": {"Sec": (1, "int64"), "Usec": (2, "int64")},
    "grpc.FSGroup": {
        "group_id": (2, "uint32"),
        "group_change_policy": (3, "types.FSGroupChangePolicy"),
    },
    "grpc.SharedMount": {
        "name": (1, "string"),
        "src_ctr": (2, "string"),
        "src_path": (3, "string"),
        "dst_ctr": (4, "string"),
        "dst_path": (5, "string"),
    },
    "grpc.Storage": {
        "driver": (1, "string"),
        "driver_options": (2, "repeated string"),
        "source": (3, "string"),
        "fstype": (4, "string"),
        "options": (5, "repeated string"),
        "mount_point": (6, "string"),
        "fs_group": (7, "grpc.FSGroup"),
        "shared": (8, "bool"),
    },
    "grpc.Device": {
        "id": (1, "string"),
        "type": (2, "string"),
        "vm_path": (3, "string"),
        "container_path": (4, "string"),
        "options": (5, "repeated string"),
    },
    "grpc.StringUser": {
        "uid": (1, "string"),
        "gid": (2, "string"),
        "additionalGids": (3, "repeated string"),
    },
    "grpc.CopyFileRequest": {
        "path": (1, "string"),
        "file_size": (2, "int64"),
        "file_mode": (3, "uint32"),
        "dir_mode": (4, "uint32"),
        "uid": (5, "int32"),
        "gid": (6, "int32"),
        "offset": (7, "int64"),
        "data": (8, "bytes"),
    },
    "grpc.GetOOMEventRequest": {},
    "grpc.OOMEvent": {"container_id": (1, "string")},
    "grpc.AddSwapRequest": {"PCIPath": (1, "repeated uint32")},
    "grpc.AddSwapPathRequest": {"path": (1, "string")},
    "grpc.GetMetricsRequest": {},
    "grpc.Metrics": {"metrics": (1, "string")},
    "grpc.VolumeStatsRequest": {"volume_guest_path": (1, "string")},
    "grpc.ResizeVolumeRequest": {"volume_guest_path": (1, "string"), "size": (2, "uint64")},
    "grpc.SetPolicyRequest": {"policy": (1, "string")},
    "grpc.GetDiagnosticDataRequest": {"log_type": (1, "string"), "container_id": (2, "string")},
    "grpc.GetDiagnosticDataResponse": {"data": (1, "string")},
    "grpc.MemAgentMemcgConfig": {
        "disabled": (1, "optional bool"),
        "swap": (2, "optional bool"),
        "swappiness_max": (3, "optional uint32"),
        "period_secs": (4, "optional uint64"),
        "period_psi_percent_limit": (5, "optional uint32"),
        "eviction_psi_percent_limit": (6, "optional uint32"),
        "eviction_run_aging_count_min": (7, "optional uint64"),
    },
    "grpc.MemAgentCompactConfig": {
        "disabled": (1, "optional bool"),
        "period_secs": (2, "optional uint64"),
        "period_psi_percent_limit": (3, "optional uint32"),
        "compact_psi_percent_limit": (4, "optional uint32"),
        "compact_sec_max": (5, "optional int64"),
        "compact_order": (6, "optional uint32"),
        "compact_threshold": (7, "optional uint64"),
        "compact_force_times": (8, "optional uint64"),
    },
}

ENUMS: dict[str, dict[str, int]] = {
    "types.IPFamily": {"v4": 0, "v6": 1},
    "types.FSGroupChangePolicy": {"Always": 0, "OnRootMismatch": 1},
    "grpc.VolumeUsage.Unit": {"UNKNOWN": 0, "BYTES": 1, "INODES": 2},
    "grpc.HealthCheckResponse.ServingStatus": {"UNKNOWN": 0, "SERVING": 1, "NOT_SERVING": 2},
}

# service -> {RPC: (request, response)}; names without a package are in package grpc.
SERVICES: dict[str, dict[str, tuple[str, str]]] = {
    "grpc.AgentService": {
        "CreateContainer": ("CreateContainerRequest", EMPTY),
        "StartContainer": ("StartContainerRequest", EMPTY),
        "RemoveContainer": ("RemoveContainerRequest", EMPTY),
        "ExecProcess": ("ExecProcessRequest", EMPTY),
        "SignalProcess": ("SignalProcessRequest", EMPTY),
        "WaitProcess": ("WaitProcessRequest", "WaitProcessResponse"),
        "UpdateContainer": ("UpdateContainerRequest", EMPTY),
        "UpdateEphemeralMounts": ("UpdateEphemeralMountsRequest", EMPTY),
        "StatsContainer": ("StatsContainerRequest", "StatsContainerResponse"),
        "PauseContainer": ("PauseContainerRequest", EMPTY),
        "ResumeContainer": ("ResumeContainerRequest", EMPTY),
        "RemoveStaleVirtiofsShareMounts": ("RemoveStaleVirtiofsShareMountsRequest", EMPTY),
        "GetDiagnosticData": ("GetDiagnosticDataRequest", "GetDiagnosticDataResponse"),
        "WriteStdin": ("WriteStreamRequest", "WriteStreamResponse"),
        "ReadStdout": ("ReadStreamRequest", "ReadStreamResponse"),
        "ReadStderr": ("ReadStreamRequest", "ReadStreamResponse"),
        "CloseStdin": ("CloseStdinRequest", EMPTY),
        "TtyWinResize": ("TtyWinResizeRequest", EMPTY),
        "UpdateInterface": ("UpdateInterfaceRequest", "types.Interface"),
        "UpdateRoutes": ("UpdateRoutesRequest", "Routes"),
        "ListInterfaces": ("ListInterfacesRequest", "Interfaces"),
        "ListRoutes": ("ListRoutesRequest", "Routes"),
        "AddARPNeighbors": ("AddARPNeighborsRequest", EMPTY),
        "GetIPTables": ("GetIPTablesRequest", "GetIPTablesResponse"),
        "SetIPTables": ("SetIPTablesRequest", "SetIPTablesResponse"),
        "GetMetrics": ("GetMetricsRequest", "Metrics"),
        "MemAgentMemcgSet": ("MemAgentMemcgConfig", EMPTY),
        "MemAgentCompactSet": ("MemAgentCompactConfig", EMPTY),
        "CreateSandbox": ("CreateSandboxRequest", EMPTY),
        "DestroySandbox": ("DestroySandboxRequest", EMPTY),
        "OnlineCPUMem": ("OnlineCPUMemRequest", EMPTY),
        "ReseedRandomDev": ("ReseedRandomDevRequest", EMPTY),
        "GetGuestDetails": ("GuestDetailsRequest", "GuestDetailsResponse"),
        "MemHotplugByProbe": ("MemHotplugByProbeRequest", EMPTY),
        "SetGuestDateTime": ("SetGuestDateTimeRequest", EMPTY),
        "CopyFile": ("CopyFileRequest", EMPTY),
        "GetOOMEvent": ("GetOOMEventRequest", "OOMEvent"),
        "AddSwap": ("AddSwapRequest", EMPTY),
        "AddSwapPath": ("AddSwapPathRequest", EMPTY),
        "GetVolumeStats": ("VolumeStatsRequest", "VolumeStatsResponse"),
        "ResizeVolume": ("ResizeVolumeRequest", EMPTY),
        "SetPolicy": ("SetPolicyRequest", EMPTY),
    },
    "grpc.Health": {
        "Check": ("CheckRequest", "HealthCheckResponse"),
        "Version": ("CheckRequest", "VersionCheckResponse"),
    },
}

# The messages shim-v2-contract.md §5.2 names (the shim's working set).
CONTRACT_5_2 = [
    "grpc.CreateSandboxRequest",
    "grpc.DestroySandboxRequest",
    "grpc.KernelModule",
    "grpc.CreateContainerRequest",
    "grpc.StringUser",
    "grpc.Device",
    "grpc.Storage",
    "grpc.StartContainerRequest",
    "grpc.RemoveContainerRequest",
    "grpc.ExecProcessRequest",
    "grpc.SignalProcessRequest",
    "grpc.WaitProcessRequest",
    "grpc.WaitProcessResponse",
    "grpc.WriteStreamRequest",
    "grpc.WriteStreamResponse",
    "grpc.ReadStreamRequest",
    "grpc.ReadStreamResponse",
    "grpc.CloseStdinRequest",
    "grpc.TtyWinResizeRequest",
    "grpc.UpdateContainerRequest",
    "grpc.StatsContainerRequest",
    "grpc.StatsContainerResponse",
    "grpc.CgroupStats",
    "grpc.PauseContainerRequest",
    "grpc.ResumeContainerRequest",
    "grpc.GetOOMEventRequest",
    "grpc.OOMEvent",
    "grpc.CheckRequest",
    "grpc.HealthCheckResponse",
    "grpc.VersionCheckResponse",
    "grpc.Spec",
    "grpc.Root",
    "grpc.Mount",
    "grpc.Process",
    "grpc.Box",
    "grpc.User",
    "types.Interface",
    "types.Route",
    "types.ARPNeighbor",
    "types.IPAddress",
]


class Ours:
    """Messages, enums and services of our generated modules, as descriptor protos."""

    def __init__(self) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        for name in MODULES:
            proto = descriptor_pb2.FileDescriptorProto()
            importlib.import_module(f"kata_shim.proto.{name}_pb2").DESCRIPTOR.CopyToProto(proto)
            self._add(proto.package, proto.message_type, proto.enum_type)
            for service in proto.service:
                self.services[f"{proto.package}.{service.name}"] = service

    def _add(self, prefix: str, messages, enums) -> None:
        for enum in enums:
            self.enums[f"{prefix}.{enum.name}"] = enum
        for message in messages:
            self.messages[f"{prefix}.{message.name}"] = message
            self._add(f"{prefix}.{message.name}", message.nested_type, message.enum_type)

    def type_of(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        """The field's type as .proto source spells it (fully qualified names)."""
        base = SCALARS.get(field.type) or field.type_name.lstrip(".")
        if field.label == FDP.LABEL_REPEATED:
            entry = self.messages.get(base)
            if entry is not None and entry.options.map_entry:
                key, value = entry.field
                return f"map<{self.type_of(key)}, {self.type_of(value)}>"
            return f"repeated {base}"
        return f"optional {base}" if field.proto3_optional else base


@pytest.fixture(scope="module")
def ours() -> Ours:
    return Ours()


def test_fields_match_the_facts(ours: Ours, report: Report) -> None:
    problems = []
    fields = 0
    for message_name, facts in FIELDS.items():
        message = ours.messages.get(message_name)
        if message is None:
            problems.append(f"{message_name}: not defined")
            continue
        defined = {f.name: (f.number, ours.type_of(f)) for f in message.field}
        fields += len(defined)
        for name in sorted(facts.keys() | defined.keys()):
            if name not in defined:
                problems.append(f"{message_name}.{name}: missing, expected {facts[name]}")
            elif name not in facts:
                problems.append(f"{message_name}.{name}: not in Kata's protocol {defined[name]}")
            elif defined[name] != facts[name]:
                problems.append(f"{message_name}.{name}: ours {defined[name]} Kata {facts[name]}")
    report(f"agent facts: checked {len(FIELDS)} messages, {fields} fields")
    assert problems == [], "\n".join(problems)


def test_every_message_we_define_has_facts(ours: Ours) -> None:
    undocumented = [
        name for name, m in ours.messages.items() if not m.options.map_entry and name not in FIELDS
    ]
    assert undocumented == []


def test_contract_messages_are_covered(ours: Ours) -> None:
    assert [name for name in CONTRACT_5_2 if name not in FIELDS or name not in ours.messages] == []


def test_enums_match_the_facts(ours: Ours) -> None:
    defined = {name: {v.name: v.number for v in e.value} for name, e in ours.enums.items()}
    assert defined == ENUMS


def test_services_match_the_facts(ours: Ours) -> None:
    def qualified(name: str) -> str:
        return name if "." in name else f"grpc.{name}"

    expected = {
        service: {rpc: (qualified(req), qualified(resp)) for rpc, (req, resp) in rpcs.items()}
        for service, rpcs in SERVICES.items()
    }
    defined = {
        service: {m.name: (m.input_type[1:], m.output_type[1:]) for m in desc.method}
        for service, desc in ours.services.items()
    }
    assert defined == expected
    assert not any(
        m.client_streaming or m.server_streaming for s in ours.services.values() for m in s.method
    )
