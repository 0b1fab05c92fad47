"""The shape of Kata's configuration.toml as kata-shim reads it: tables, keys, types.

Rules: the key tables below are data (one dict per TOML table), validation is
table-driven; a wrong type is a `ConfigError` naming the file, the table and
the key; an unknown key or table is a warning (returned, logged by the
loader), never an error, so a stock Kata file with keys we do not use loads.
Exactly one `[hypervisor.<type>]` table must be present. Every dataclass is
frozen; `Config.as_mapping()` is the plain-dict view handed to the task service.
"""

from __future__ import annotations

import enum
import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "HYPERVISOR_TYPES",
    "AgentConfig",
    "Config",
    "ConfigError",
    "HypervisorConfig",
    "Kind",
    "RuntimeConfig",
    "build_config",
]

DEFAULT_STATE_DIR = "/run/kata-shim"


class ConfigError(ValueError):
    """The configuration file cannot be used (unreadable, bad TOML, wrong types)."""


class Kind(enum.Enum):
    STR = "a string"
    BOOL = "a boolean"
    INT = "an integer"
    NUMBER = "a number"
    STR_LIST = "a list of strings"


_S, _B, _I, _N, _L = Kind.STR, Kind.BOOL, Kind.INT, Kind.NUMBER, Kind.STR_LIST

# Kata's [hypervisor.qemu] keys (configuration-qemu.toml.in) plus ours (accel, agent_channel,
# debug_console_enabled: Kata has it in [agent.kata], which is honoured too — see as_mapping).
_VM_KEYS: dict[str, Kind] = {
    "path": _S, "kernel": _S, "initrd": _S, "image": _S, "machine_type": _S,
    "rootfs_type": _S, "kernel_params": _S, "firmware": _S, "firmware_volume": _S,
    "machine_accelerators": _S, "cpu_features": _S, "default_vcpus": _N,
    "default_maxvcpus": _I, "default_memory": _I, "memory_slots": _I,
    "default_maxmemory": _I, "memory_offset": _I, "default_bridges": _I,
    "shared_fs": _S, "virtio_fs_daemon": _S, "valid_virtio_fs_daemon_paths": _L,
    "virtio_fs_cache": _S, "virtio_fs_cache_size": _I, "virtio_fs_extra_args": _L,
    "virtio_fs_queue_size": _I, "block_device_driver": _S, "disable_block_device_use": _B,
    "block_device_cache_set": _B, "block_device_cache_direct": _B,
    "block_device_cache_noflush": _B, "enable_iothreads": _B, "enable_annotations": _L,
    "valid_hypervisor_paths": _L, "enable_debug": _B, "rootless": _B,
    "disable_nesting_checks": _B, "enable_iommu": _B, "enable_hugepages": _B,
    "file_mem_backend": _S, "guest_hook_path": _S, "hot_plug_vfio": _S, "cold_plug_vfio": _S,
    "pcie_root_port": _I, "disable_vhost_net": _B, "entropy_source": _S,
    "guest_memory_dump_path": _S, "disable_image_nvdimm": _B, "disable_selinux": _B,
    "disable_guest_selinux": _B, "confidential_guest": _B, "seccompsandbox": _S,
    "accel": _S, "agent_channel": _S, "debug_console_enabled": _B,
    "tcg_tb_size_mb": _I, "enable_balloon_free_page_reporting": _B,
}  # fmt: skip

HYPERVISOR_KEYS: dict[str, dict[str, Kind]] = {
    "local": {"enable_debug": _B, "path": _S},
    "qemu": _VM_KEYS,
    "libvirt": {**_VM_KEYS, "uri": _S},
}
HYPERVISOR_TYPES = tuple(HYPERVISOR_KEYS)

AGENT_KEYS: dict[str, Kind] = {
    "enable_debug": _B, "enable_tracing": _B, "debug_console_enabled": _B,
    "dial_timeout": _N, "kernel_modules": _L, "cdh_api_timeout": _N,
    "launch_process_timeout": _N, "container_pipe_size": _I,
}  # fmt: skip

RUNTIME_KEYS: dict[str, Kind] = {
    "enable_debug": _B, "state_dir": _S, "sandbox_cgroup_only": _B,
    "internetworking_model": _S, "disable_guest_seccomp": _B, "disable_new_netns": _B,
    "static_sandbox_resource_mgmt": _B, "sandbox_bind_mounts": _L, "vfio_mode": _S,
    "disable_guest_empty_dir": _B, "emptydir_mode": _S, "experimental": _L,
    "enable_pprof": _B, "create_container_timeout": _N, "enable_tracing": _B,
    "jaeger_endpoint": _S, "jaeger_user": _S, "jaeger_password": _S,
    "guest_selinux_label": _S, "enable_vcpus_pinning": _B, "kubelet_root_dir": _S,
    "pod_resource_api_sock": _S, "dan_conf": _S,
}  # fmt: skip

FACTORY_KEYS: dict[str, Kind] = {
    "enable_template": _B, "template_path": _S, "vm_cache_number": _I, "vm_cache_endpoint": _S,
}  # fmt: skip


def _matches(kind: Kind, value: Any) -> bool:
    if kind is Kind.BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):  # bool is an int subclass: never a number here
        return False
    if kind is Kind.INT:
        return isinstance(value, int)
    if kind is Kind.NUMBER:
        return isinstance(value, int | float) and math.isfinite(value)
    if kind is Kind.STR:
        return isinstance(value, str)
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def check_table(
    source: str, name: str, table: Any, keys: Mapping[str, Kind], warnings: list[str]
) -> dict[str, Any]:
    """Validate one TOML table against `keys`; unknown keys become warnings."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table, got {_describe(table)}")
    for key, value in table.items():
        kind = keys.get(key)
        if kind is None:
            warnings.append(f"{source}: [{name}] unknown key {key!r} ignored")
        elif not _matches(kind, value):
            raise ConfigError(
                f"{source}: [{name}] {key}: expected {kind.value}, got {_describe(value)}"
            )
    return dict(table)


@dataclass(frozen=True, slots=True)
class HypervisorConfig:
    """The one `[hypervisor.<type>]` table; `table` is handed to the sandbox backend."""

    type: str
    table: Mapping[str, Any] = field(default_factory=dict)

    @property
    def enable_debug(self) -> bool:
        return bool(self.table.get("enable_debug", False))


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """`[agent.kata]`."""

    enable_debug: bool = False
    debug_console_enabled: bool = False
    dial_timeout: float = 45.0
    kernel_modules: tuple[str, ...] = ()
    table: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """`[runtime]`; `state_dir` holds one directory per sandbox."""

    enable_debug: bool = False
    state_dir: str = DEFAULT_STATE_DIR
    sandbox_cgroup_only: bool = False
    table: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration and the file it came from."""

    source: str
    hypervisor: HypervisorConfig
    agent: AgentConfig = AgentConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    warnings: tuple[str, ...] = ()

    @property
    def debug(self) -> bool:
        return self.runtime.enable_debug

    def sandbox_state_dir(self, sandbox_id: str) -> Path:
        return Path(self.runtime.state_dir) / sandbox_id

    def as_mapping(self) -> Mapping[str, Any]:
        """Plain-dict view for the task service's `config_loader` contract."""
        agent = {
            **self.agent.table,
            "enable_debug": self.agent.enable_debug,
            "debug_console_enabled": self.agent.debug_console_enabled,
            "dial_timeout": self.agent.dial_timeout,
            "kernel_modules": list(self.agent.kernel_modules),
        }
        runtime = {**self.runtime.table, "state_dir": self.runtime.state_dir}
        runtime["enable_debug"] = self.runtime.enable_debug
        hypervisor = dict(self.hypervisor.table)
        if self.agent.debug_console_enabled:  # Kata's place for it; the backend reads this table
            hypervisor["debug_console_enabled"] = True
        return MappingProxyType(
            {
                "source": self.source,
                "hypervisor_type": self.hypervisor.type,
                "hypervisor": hypervisor,
                "agent": agent,
                "runtime": runtime,
            }
        )


def _hypervisor(source: str, data: dict[str, Any], warnings: list[str]) -> HypervisorConfig:
    section = data.get("hypervisor")
    if not isinstance(section, dict) or not section:
        raise ConfigError(
            f"{source}: no [hypervisor.<type>] table (one of: {', '.join(HYPERVISOR_TYPES)})"
        )
    if len(section) != 1:
        found = ", ".join(f"[hypervisor.{name}]" for name in section)
        raise ConfigError(f"{source}: exactly one hypervisor table expected, found {found}")
    (kind, table), *_ = section.items()
    if kind not in HYPERVISOR_KEYS:
        raise ConfigError(
            f"{source}: [hypervisor.{kind}]: hypervisor type {kind!r} is not supported "
            f"(supported: {', '.join(HYPERVISOR_TYPES)})"
        )
    checked = check_table(source, f"hypervisor.{kind}", table, HYPERVISOR_KEYS[kind], warnings)
    if checked.get("image") and checked.get("initrd"):
        raise ConfigError(f"{source}: [hypervisor.{kind}] cannot set both image and initrd")
    return HypervisorConfig(kind, MappingProxyType(checked))


def _agent(source: str, data: dict[str, Any], warnings: list[str]) -> AgentConfig:
    section = data.get("agent", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [agent] must be a table")
    for name in section:
        if name != "kata":
            warnings.append(f"{source}: unknown table [agent.{name}] ignored")
    table = check_table(source, "agent.kata", section.get("kata", {}), AGENT_KEYS, warnings)
    timeout = float(table.get("dial_timeout", 45.0))
    if timeout <= 0:
        raise ConfigError(f"{source}: [agent.kata] dial_timeout: must be > 0, got {timeout}")
    return AgentConfig(
        enable_debug=table.get("enable_debug", False),
        debug_console_enabled=table.get("debug_console_enabled", False),
        dial_timeout=timeout,
        kernel_modules=tuple(table.get("kernel_modules", ())),
        table=MappingProxyType(table),
    )


def _runtime(source: str, data: dict[str, Any], warnings: list[str]) -> RuntimeConfig:
    table = check_table(source, "runtime", data.get("runtime", {}), RUNTIME_KEYS, warnings)
    state_dir = table.get("state_dir", DEFAULT_STATE_DIR)
    if not posixpath.isabs(state_dir):
        raise ConfigError(f"{source}: [runtime] state_dir: must be absolute, got {state_dir!r}")
    return RuntimeConfig(
        enable_debug=table.get("enable_debug", False),
        state_dir=posixpath.normpath(state_dir),
        sandbox_cgroup_only=table.get("sandbox_cgroup_only", False),
        table=MappingProxyType(table),
    )


_KNOWN_TABLES = ("hypervisor", "agent", "runtime", "factory", "image")


def build_config(source: str, data: dict[str, Any]) -> Config:
    """Validate parsed TOML `data` read from `source` into a Config."""
    warnings: list[str] = []
    for name in data:
        if name not in _KNOWN_TABLES:
            warnings.append(f"{source}: unknown top-level key or table {name!r} ignored")
    if "factory" in data:
        check_table(source, "factory", data["factory"], FACTORY_KEYS, warnings)
    return Config(
        source=source,
        hypervisor=_hypervisor(source, data, warnings),
        agent=_agent(source, data, warnings),
        runtime=_runtime(source, data, warnings),
        warnings=tuple(warnings),
    )
