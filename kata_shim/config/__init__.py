"""Kata-style configuration.toml: lookup order (loader) and validated schema (schema).

`load_config(config_path)` returns a frozen `Config`; the shim builds its
sandboxes from it (shim/runtime.py). Importing this package costs only tomllib
and dataclasses.
"""

from kata_shim.config.loader import DEFAULT_PATHS, EMBEDDED_CONFIG, choose_config_file, load_config
from kata_shim.config.schema import (
    HYPERVISOR_TYPES,
    AgentConfig,
    Config,
    ConfigError,
    HypervisorConfig,
    RuntimeConfig,
)

__all__ = [
    "DEFAULT_PATHS",
    "EMBEDDED_CONFIG",
    "HYPERVISOR_TYPES",
    "AgentConfig",
    "Config",
    "ConfigError",
    "HypervisorConfig",
    "RuntimeConfig",
    "choose_config_file",
    "load_config",
]
