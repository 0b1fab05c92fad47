"""Choosing and reading configuration.toml (Kata's lookup order).

Order, first match wins:
  1. `config_path` from the runtime options (containerd `ConfigPath`) — must exist;
  2. `$KATA_CONF_FILE` — must exist;
  3. /etc/kata-containers/configuration.toml;
  4. /usr/share/defaults/kata-containers/configuration.toml;
  5. the default embedded in this package (config/configuration.toml).
Explicit choices (1, 2) that do not exist are errors, not fall-throughs. The
chosen file and every warning are logged (never printed: `start` must stay
silent, and it does not load the configuration at all).
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from kata_shim.config.schema import Config, ConfigError, build_config

__all__ = ["DEFAULT_PATHS", "EMBEDDED_CONFIG", "choose_config_file", "load_config"]

log = logging.getLogger(__name__)

DEFAULT_PATHS: tuple[Path, ...] = (
    Path("/etc/kata-containers/configuration.toml"),
    Path("/usr/share/defaults/kata-containers/configuration.toml"),
)
EMBEDDED_CONFIG = Path(__file__).with_name("configuration.toml")
ENV_VAR = "KATA_CONF_FILE"


def _explicit(path: str, origin: str) -> Path:
    chosen = Path(path)
    if not chosen.is_file():
        problem = "is not a regular file" if chosen.exists() else "does not exist"
        raise ConfigError(f"configuration file {path} (from {origin}) {problem}")
    return chosen


def choose_config_file(
    config_path: str | None,
    *,
    env: Mapping[str, str] | None = None,
    defaults: Sequence[Path] = DEFAULT_PATHS,
) -> tuple[Path, str]:
    """The file to load and why it was chosen (for the log)."""
    if config_path:
        return _explicit(config_path, "runtime options config_path"), "runtime options"
    from_env = (os.environ if env is None else env).get(ENV_VAR)
    if from_env:
        return _explicit(from_env, ENV_VAR), ENV_VAR
    for candidate in defaults:
        if candidate.is_file():
            return candidate, "default location"
    return EMBEDDED_CONFIG, "embedded default"


def read_config_file(path: Path) -> Config:
    """Parse and validate one file (no lookup)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return build_config(str(path), data)


def load_config(
    config_path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    defaults: Sequence[Path] = DEFAULT_PATHS,
) -> Config:
    """Choose, read and validate the configuration; log the choice and the warnings."""
    path, reason = choose_config_file(config_path, env=env, defaults=defaults)
    config = read_config_file(path)
    log.info("configuration %s (%s): hypervisor %s", path, reason, config.hypervisor.type)
    for warning in config.warnings:
        log.warning("%s", warning)
    return config
