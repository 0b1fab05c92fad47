"""The `Sandbox` interface the task service depends on, and the backend registry.

A sandbox is one pod's isolation boundary (a VM, or for `local` a host process
group) hosting one guest agent. The task service only ever sees this ABC: it
never imports a concrete backend. Backends register themselves by name
(`local`, `qemu`, `libvirt`) and are chosen from the configuration.
Rule: every method is idempotent where it can be (stop/cleanup twice is fine),
and none blocks forever — each takes or derives a bound. A backend says where
its agent is (`agent_address`); dialling it is implemented once, here, over
sandbox/dial.py. The pod's network namespace reaches a backend as a typed
`PodNetworkRequest` (`use_network`, before `start`); `configure_guest_network`
runs after the agent answered. The VM's size from the pod's annotations arrives the
same way (`use_sizing`, before `start`). Backends that cannot carry a netns keep the
defaults: the pod has no network beyond `lo` (logged). `allow_owners` tells
the backend which host owners its file server may give shared files.
"""

from __future__ import annotations

import abc
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kata_shim.config.schema import DEFAULT_INTERNETWORKING_MODEL, AgentConfig, HypervisorConfig
from kata_shim.errors import DeadlineExceeded, InvalidArgument, ShimError
from kata_shim.sandbox.dial import AgentAddress, DialPolicy, dial_agent
from kata_shim.sandbox.owners import Owners
from kata_shim.sandbox.sizing import SizingRequest
from kata_shim.ttrpc.client import Client

if TYPE_CHECKING:
    from kata_shim.agent.client import AgentClient

__all__ = [
    "BackendFactory",
    "PodNetworkRequest",
    "Sandbox",
    "SandboxProvider",
    "SandboxSpec",
    "available_backends",
    "create_sandbox",
    "register_backend",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What a backend needs to know to build one sandbox.

    `state_dir` is private to this sandbox (sockets, logs, share dirs) and is
    removed by `cleanup`. `hypervisor` is the configuration's `[hypervisor.<type>]`
    section (its type names the backend, its table is the backend's to read),
    `agent` the `[agent.kata]` section; `config_source` is the configuration file
    they came from (for error messages).
    """

    sandbox_id: str
    state_dir: Path
    hypervisor: HypervisorConfig = field(default_factory=lambda: HypervisorConfig("local"))
    agent: AgentConfig = field(default_factory=AgentConfig)
    debug: bool = False
    config_source: str = ""
    #: `[runtime] internetworking_model` (tcfilter, macvtap, none)
    internetworking_model: str = DEFAULT_INTERNETWORKING_MODEL
    #: `[runtime] sandbox_cgroup_only`: the sandbox and the shim run in the pod's host
    #: cgroup (sandbox/podcgroup.py)
    sandbox_cgroup_only: bool = False
    #: `[runtime] static_sandbox_resource_mgmt`: the containers' limits add to the VM's size
    static_sandbox_resource_mgmt: bool = False


@dataclass(frozen=True, slots=True)
class PodNetworkRequest:
    """The pod's network: the sandbox container's network namespace (OCI
    `linux.namespaces[type=network].path`, made by CNI), to carry into the sandbox."""

    netns: Path


class Sandbox(abc.ABC):
    """One pod's sandbox. Lifecycle: start → (share/unshare)* → stop → cleanup."""

    #: backend name in the registry and in configuration.toml
    backend: str = ""
    #: False when containers are not isolated from the host (the `local` backend)
    isolated: bool = True
    #: pause after a failed dial attempt, and the bound of each attempt's health check
    dial_retry: float = 0.1
    dial_health_timeout: float = 2.0
    #: the connection `start` saw answer Health.Check, for the first `connect_agent`
    _answered: Client | None = None

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec

    @property
    @abc.abstractmethod
    def pid(self) -> int:
        """Host pid standing for the sandbox (hypervisor or local agent); 0 before start."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Boot the sandbox and return once its agent channel can be dialled.

        Raises ShimError (Unavailable / DeadlineExceeded) when it cannot boot;
        leaves nothing running in that case.
        """

    def use_network(self, request: PodNetworkRequest) -> None:
        """Before `start`: carry the pod's network namespace into the sandbox. A backend
        that cannot leaves the pod without network beyond `lo` (logged here)."""
        log.info(
            "sandbox %s: the %s backend does not carry network namespace %s into the "
            "sandbox: the pod has no network beyond lo",
            self.spec.sandbox_id,
            self.backend,
            request.netns,
        )

    def use_sizing(self, request: SizingRequest) -> None:
        """Before `start`: size the VM from the pod's annotations (sandbox/sizing.py); raises
        InvalidArgument for a bad one. A backend without a VM ignores them (logged here)."""
        log.info(
            "sandbox %s: the %s backend has no VM to size: annotations %s ignored",
            self.spec.sandbox_id,
            self.backend,
            ", ".join(sorted(request.annotations)),
        )

    async def configure_guest_network(self, agent: AgentClient) -> None:
        """After the agent answered and before CreateSandbox: configure the guest's
        interfaces, routes and neighbours through `agent` (nothing for most backends)."""
        return None

    def network_interfaces(self) -> list[dict[str, Any]]:
        """The pod interfaces carried into the sandbox: name, MAC, addresses (for /info)."""
        return []

    @abc.abstractmethod
    def agent_address(self) -> AgentAddress:
        """Where the host reaches this sandbox's agent (meaningful once `start` began)."""

    async def connect_agent(self) -> Client:
        """Dial the guest agent until it answers Health.Check or the dial timeout passes.
        The first call after `start` gets the connection `start` already checked."""
        client, self._answered = self._answered, None
        if client is not None and not client.closed:
            return client
        policy = DialPolicy(self.dial_timeout, self.dial_retry, self.dial_health_timeout)
        return await dial_agent(
            self.agent_address(), policy, alive=self._check_alive, silent=self._agent_silent
        )

    @property
    def dial_timeout(self) -> float:
        return self.spec.agent.dial_timeout

    def _check_alive(self) -> None:
        """Raise a ShimError when the sandbox is gone (ends a dial early)."""
        return None

    def _agent_silent(self, last_error: Exception | None) -> ShimError:
        """The error of a dial that timed out."""
        return DeadlineExceeded(
            f"timed out connecting to agent at {self.agent_address()}: {last_error}"
        )

    async def _await_agent(self) -> None:
        """For `start`: return once the agent answers. The answered connection is kept for
        the next `connect_agent` (the pod's), so a boot dials and checks the agent once."""
        self._drop_answered()
        self._answered = await self.connect_agent()

    def agent_destroyed(self) -> None:
        """The agent answered DestroySandbox: it removed every container, mount and cgroup
        of the pod, so nothing is left for it to do on a graceful stop. A backend may stop
        the sandbox without a grace period then; the default changes nothing."""
        return None

    def _drop_answered(self) -> None:
        """Close the connection `start` kept (a backend's `stop` calls this)."""
        client, self._answered = self._answered, None
        if client is not None:
            client.close()

    @abc.abstractmethod
    async def share(
        self, container_id: str, name: str, host_path: Path, *, readonly: bool = False
    ) -> str:
        """Make `host_path` (a container's rootfs, `name` = "rootfs", or a bind-mount source)
        visible to the guest, read-only on the host side too when `readonly`; return the
        path the agent must use for it."""

    def allow_owners(self, owners: Owners) -> None:
        """Before a container or exec is created: the uids and gids it brings (its user,
        its image's /etc/passwd and /etc/group; sandbox/owners.py) join the owners the
        sandbox's file server may give a shared host file. The set only grows. A backend
        that confines its file server's chowns to that set (qemu: qemu/ownerguard.py)
        overrides this; the default ignores it (the file server is not restricted)."""
        return None

    @abc.abstractmethod
    async def unshare(self, container_id: str) -> None:
        """Undo every `share` of one container (idempotent)."""

    @abc.abstractmethod
    async def wait(self) -> int:
        """Resolve when the sandbox dies or is stopped; return the host-side exit status."""

    @abc.abstractmethod
    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the sandbox (gracefully, then by force after `timeout`). Idempotent."""

    @abc.abstractmethod
    async def cleanup(self) -> None:
        """Remove every host resource the sandbox created (sockets, dirs, mounts). Idempotent."""


#: builds a backend's Sandbox from a spec (the registry's entries)
BackendFactory = Callable[[SandboxSpec], Sandbox]
#: the sandbox for a sandbox id, configured (what the task service is given)
SandboxProvider = Callable[[str], Sandbox]

_BACKENDS: dict[str, BackendFactory] = {}

# Built-in backends are imported on first use only (keeps libvirt/QMP imports
# off the shim's start path when they are not configured).
_BUILTIN_MODULES = {
    "local": "kata_shim.sandbox.local",
    "qemu": "kata_shim.sandbox.qemu",
    "libvirt": "kata_shim.sandbox.libvirt",
}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `factory` available as hypervisor type `name`."""
    _BACKENDS[name] = factory


def available_backends() -> list[str]:
    return sorted(set(_BACKENDS) | set(_BUILTIN_MODULES))


def create_sandbox(spec: SandboxSpec) -> Sandbox:
    """A sandbox of backend `spec.hypervisor.type` (registered by importing its module)."""
    backend = spec.hypervisor.type
    if backend not in _BACKENDS and backend in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[backend])
    factory = _BACKENDS.get(backend)
    if factory is None:
        known = ", ".join(available_backends()) or "none"
        raise InvalidArgument(f"unknown sandbox backend {backend!r} (known: {known})")
    return factory(spec)
