"""`kata-shim env`: the effective configuration and the file it came from.

Same lookup as the shim (`--config` stands for containerd's ConfigPath, then
$KATA_CONF_FILE, /etc, /usr/share/defaults, the embedded default). Printed as
TOML (`--json` for scripts), validated: warnings go to the end, an invalid
file is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kata_shim import __version__
from kata_shim.config.schema import Config

__all__ = ["render_env", "render_json"]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def _table(name: str, table: Mapping[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    lines += [f"{key} = {_value(value)}" for key, value in sorted(table.items())]
    return [*lines, ""]


def sections(config: Config) -> dict[str, Mapping[str, Any]]:
    """Each table as the shim uses it: the file's keys with the typed values filled in."""
    agent = {
        **config.agent.table,
        "enable_debug": config.agent.enable_debug,
        "debug_console_enabled": config.agent.debug_console_enabled,
        "dial_timeout": config.agent.dial_timeout,
        "kernel_modules": list(config.agent.kernel_modules),
    }
    runtime = {**config.runtime.table, "state_dir": config.runtime.state_dir}
    runtime["enable_debug"] = config.runtime.enable_debug
    return {
        f"hypervisor.{config.hypervisor.type}": config.hypervisor.table,
        "agent.kata": agent,
        "runtime": runtime,
    }


def render_env(config: Config, reason: str) -> str:
    lines = [
        f"# kata-shim {__version__}",
        f"# configuration: {config.source} ({reason})",
        "",
    ]
    for name, table in sections(config).items():
        lines += _table(name, table)
    lines += [f"# warning: {warning}" for warning in config.warnings]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_json(config: Config, reason: str) -> str:
    data = {
        "version": __version__,
        "source": config.source,
        "reason": reason,
        "config": {name: dict(table) for name, table in sections(config).items()},
        "warnings": list(config.warnings),
    }
    return json.dumps(data, indent=2) + "\n"
