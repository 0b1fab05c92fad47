"""The shape of Kata's configuration.toml as kata-shim reads it: tables, keys, types.

Rules: the key tables below are data (one dict per TOML table), validation is
table-driven; a wrong type is a `ConfigError` naming the file, the table and
the key; an unknown key or table is a warning (returned, logged by the
loader), never an error, so a stock Kata file with keys we do not use loads.
Exactly one `[hypervisor.<type>]` table must be present. Every dataclass is
frozen; the shim hands its sections to the sandbox backends as they are (the
hypervisor table is the backend's to interpret, e.g. as QemuConfig).
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
    "DEFAULT_DIAL_TIMEOUT",
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
#: [runtime] internetworking_model: Kata's values ("default" is tcfilter, as in Kata)
INTERNETWORKING_MODELS = ("tcfilter", "macvtap", "none")
DEFAULT_INTERNETWORKING_MODEL = "tcfilter"
#: [agent.kata] dial_timeout when unset: how long the shim dials a booting guest's agent (s)
DEFAULT_DIAL_TIMEOUT = 45.0


class ConfigError(ValueError):
    """The configuration file cannot be used (unreadable, bad TOML, wrong types)."""


class Kind(enum.Enum):
    STR = "a string"
    BOOL = "a boolean"
    INT = "an integer"
    NUMBER = "a number"
    STR_LIST = "a list of strings"


def _keys(**names_by_kind: str) -> dict[str, Kind]:
    """A key table from space-separated key names per Kind member name."""
    return {key: Kind[kind] for kind, names in names_by_kind.items() for key in names.split()}


# Kata's [hypervisor.qemu] keys (configuration-qemu.toml.in) plus ours (accel, agent_channel,
# debug_console_enabled: Kata has it in [agent.kata], which is honoured too — see build_config).
_VM_KEYS: dict[str, Kind] = _keys(
    STR=(
        "path kernel initrd image machine_type rootfs_type kernel_params firmware "
        "firmware_volume machine_accelerators cpu_features shared_fs virtio_fs_daemon "
        "virtio_fs_cache block_device_driver file_mem_backend guest_hook_path "
        "hot_plug_vfio cold_plug_vfio entropy_source guest_memory_dump_path "
        "seccompsandbox accel agent_channel"
    ),
    BOOL=(
        "disable_block_device_use block_device_cache_set block_device_cache_direct "
        "block_device_cache_noflush enable_iothreads enable_debug rootless "
        "disable_nesting_checks enable_iommu enable_hugepages disable_vhost_net "
        "disable_image_nvdimm disable_selinux disable_guest_selinux confidential_guest "
        "debug_console_enabled enable_balloon_free_page_reporting"
    ),
    INT=(
        "default_maxvcpus default_memory memory_slots default_maxmemory memory_offset "
        "default_bridges virtio_fs_cache_size virtio_fs_queue_size pcie_root_port tcg_tb_size_mb"
    ),
    NUMBER="default_vcpus",
    STR_LIST=(
        "valid_virtio_fs_daemon_paths virtio_fs_extra_args enable_annotations "
        "valid_hypervisor_paths"
    ),
)

HYPERVISOR_KEYS: dict[str, dict[str, Kind]] = {
    "local": {"enable_debug": Kind.BOOL, "path": Kind.STR},
    "qemu": _VM_KEYS,
    "libvirt": {**_VM_KEYS, "uri": Kind.STR},
}
HYPERVISOR_TYPES = tuple(HYPERVISOR_KEYS)

AGENT_KEYS: dict[str, Kind] = _keys(
    BOOL="enable_debug enable_tracing debug_console_enabled",
    INT="container_pipe_size",
    NUMBER="dial_timeout cdh_api_timeout launch_process_timeout",
    STR_LIST="kernel_modules",
)

RUNTIME_KEYS: dict[str, Kind] = _keys(
    STR=(
        "state_dir internetworking_model vfio_mode emptydir_mode jaeger_endpoint "
        "jaeger_user jaeger_password guest_selinux_label kubelet_root_dir "
        "pod_resource_api_sock dan_conf"
    ),
    BOOL=(
        "enable_debug sandbox_cgroup_only disable_guest_seccomp disable_new_netns "
        "static_sandbox_resource_mgmt disable_guest_empty_dir enable_pprof enable_tracing "
        "enable_vcpus_pinning"
    ),
    NUMBER="create_container_timeout",
    STR_LIST="sandbox_bind_mounts experimental",
)

FACTORY_KEYS: dict[str, Kind] = _keys(
    STR="template_path vm_cache_endpoint",
    BOOL="enable_template",
    INT="vm_cache_number",
)


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
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT
    kernel_modules: tuple[str, ...] = ()
    table: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """`[runtime]`; `state_dir` holds one directory per sandbox."""

    enable_debug: bool = False
    state_dir: str = DEFAULT_STATE_DIR
    sandbox_cgroup_only: bool = False
    #: how the pod netns's interfaces reach the VM (kata_shim.network.models)
    internetworking_model: str = DEFAULT_INTERNETWORKING_MODEL
    #: the containers' CPU/memory limits (CRI annotations) add to the VM's size (Kata's key)
    static_sandbox_resource_mgmt: bool = False
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
        """`<[runtime] state_dir>/<sandbox-id>`: the sandbox's private state directory."""
        return Path(self.runtime.state_dir) / sandbox_id


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
    timeout = float(table.get("dial_timeout", DEFAULT_DIAL_TIMEOUT))
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
        internetworking_model=_internetworking_model(source, table),
        static_sandbox_resource_mgmt=table.get("static_sandbox_resource_mgmt", False),
        table=MappingProxyType(table),
    )


def _internetworking_model(source: str, table: Mapping[str, Any]) -> str:
    model = table.get("internetworking_model", "") or DEFAULT_INTERNETWORKING_MODEL
    model = DEFAULT_INTERNETWORKING_MODEL if model == "default" else model
    if model not in INTERNETWORKING_MODELS:
        raise ConfigError(
            f"{source}: [runtime] internetworking_model: {model!r} is not supported "
            f"(use one of: {', '.join(INTERNETWORKING_MODELS)})"
        )
    return str(model)


_KNOWN_TABLES = ("hypervisor", "agent", "runtime", "factory", "image")


def build_config(source: str, data: dict[str, Any]) -> Config:
    """Validate parsed TOML `data` read from `source` into a Config."""
    warnings: list[str] = []
    for name in data:
        if name not in _KNOWN_TABLES:
            warnings.append(f"{source}: unknown top-level key or table {name!r} ignored")
    if "factory" in data:
        check_table(source, "factory", data["factory"], FACTORY_KEYS, warnings)
    hypervisor = _hypervisor(source, data, warnings)
    agent = _agent(source, data, warnings)
    runtime = _runtime(source, data, warnings)
    if agent.debug_console_enabled:  # Kata's place for it; the backend reads its own table
        table = MappingProxyType({**hypervisor.table, "debug_console_enabled": True})
        hypervisor = HypervisorConfig(hypervisor.type, table)
    return Config(
        source=source,
        hypervisor=hypervisor,
        agent=agent,
        runtime=runtime,
        warnings=tuple(warnings),
    )
