"""What the `kata-shim` subcommands share: the CLI's error type and config loading.

`CliError` carries a one-line message that already says how to fix the
problem; `main` prints it as `kata-shim: <message>` and exits 1.
"""

from __future__ import annotations

from collections.abc import Mapping

from kata_shim.config import ConfigError
from kata_shim.config.loader import choose_config_file, read_config_file
from kata_shim.config.schema import Config

__all__ = ["PROG", "CliError", "load_effective_config"]

PROG = "kata-shim"


class CliError(Exception):
    """A failure to report in one line (with its fix); exit status 1."""


def load_effective_config(
    config_path: str | None, env: Mapping[str, str] | None = None
) -> tuple[Config, str]:
    """The configuration the shim would use (same lookup order) and why it was chosen."""
    try:
        path, reason = choose_config_file(config_path, env=env)
        return read_config_file(path), reason
    except ConfigError as exc:
        raise CliError(f"{exc} (fix the file, or point KATA_CONF_FILE at a valid one)") from exc
