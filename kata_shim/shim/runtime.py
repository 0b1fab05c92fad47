"""What the daemon injects into the task service: the sandbox provider, from the configuration.

`ShimRuntime.load(config_path)` is TaskService's `provider_loader`, called at
the first Create: it falls back to the options `start` saved in
`<bundle>/options.pb` when Create carried none (iSulad never sends options),
turns a bad file into InvalidArgument (the message reaches `ctr`), raises the
log level when the configuration asks for debug, and returns the
`SandboxProvider` (sandbox id → Sandbox) built from the typed configuration:
backend from `[hypervisor.<type>]`, state dir `<[runtime] state_dir>/<sandbox-id>`.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from kata_shim.config import Config, ConfigError, load_config
from kata_shim.errors import InvalidArgument
from kata_shim.sandbox.base import Sandbox, SandboxProvider, SandboxSpec, create_sandbox
from kata_shim.shim import zygote
from kata_shim.shim.minipb import options_config_path
from kata_shim.shim.paths import OPTIONS_FILE, STATE_ROOT_FILE, atomic_write

__all__ = ["ShimRuntime", "exit_fifo_dir"]

log = logging.getLogger(__name__)


class ShimRuntime:
    """Configuration and sandboxes for one daemon (bundle = the daemon's cwd)."""

    def __init__(self, bundle: str, *, debug: bool = False) -> None:
        self.bundle = bundle
        self.debug = debug  # -debug on the command line

    def saved_config_path(self) -> str | None:
        """config_path from the options `start` read on stdin, if any."""
        try:
            options = Path(self.bundle, OPTIONS_FILE).read_bytes()
        except OSError:
            return None
        try:
            return options_config_path(options)
        except ValueError as exc:
            log.warning("ignoring unreadable %s: %s", OPTIONS_FILE, exc)
            return None

    def load_config(self, config_path: str | None) -> Config:
        """The chosen configuration (InvalidArgument when it cannot be used)."""
        try:
            config = load_config(config_path or self.saved_config_path())
        except ConfigError as exc:
            raise InvalidArgument(f"kata-shim configuration: {exc}") from exc
        if config.debug or config.hypervisor.enable_debug or config.agent.enable_debug:
            logging.getLogger().setLevel(logging.DEBUG)
        return config

    def load(self, config_path: str | None) -> SandboxProvider:
        """TaskService provider_loader: the sandboxes of the chosen configuration."""
        return functools.partial(self.sandbox, self.load_config(config_path))

    def _record_state_root(self, state_root: str) -> None:
        """Tell our `delete` where sandboxes live, so it need not load the configuration."""
        try:
            atomic_write(os.path.join(self.bundle, STATE_ROOT_FILE), state_root.encode())
        except OSError as exc:  # delete then reads the configuration, as before
            log.warning("cannot record the state dir in the bundle: %s", exc)

    def sandbox(self, config: Config, sandbox_id: str) -> Sandbox:
        """The sandbox `sandbox_id` as `config` describes it (not started)."""
        debug = (
            self.debug
            or config.debug
            or config.hypervisor.enable_debug
            or config.agent.enable_debug
        )
        spec = SandboxSpec(
            sandbox_id=sandbox_id,
            state_dir=config.sandbox_state_dir(sandbox_id),
            hypervisor=config.hypervisor,
            agent=config.agent,
            debug=debug,
            config_source=config.source,
            internetworking_model=config.runtime.internetworking_model,
            sandbox_cgroup_only=config.runtime.sandbox_cgroup_only,
            static_sandbox_resource_mgmt=config.runtime.static_sandbox_resource_mgmt,
        )
        log.info(
            "sandbox %s: %s backend, state %s", sandbox_id, config.hypervisor.type, spec.state_dir
        )
        self._record_state_root(config.runtime.state_dir)
        if config.hypervisor.type != "local":
            zygote.discard()  # a pre-forked local agent (forked daemons) is not needed
        return create_sandbox(spec)


def exit_fifo_dir() -> Path | None:
    """iSulad's EXIT_FIFO_DIR, if set."""
    value = os.environ.get("EXIT_FIFO_DIR")
    return Path(value) if value else None
