"""LibvirtSandbox: the same sandbox contract as QEMU, through a transient libvirt domain.

The domain's QEMU runs as root (static DAC label, see domain.py) under our
jail: the domain's `<emulator>` is the wrapper emulator.py installs, and
`jail_options` reach that sandbox's jail: they name the owner guard's socket
(`<state>/vm/owner-guard.sock`), to which the jail hands its seccomp listener,
so QEMU's chowns are answered as on the QEMU backend (qemu/ownerguard.py).
Sockets and the console live in `<state>/vm/` (the debug console's socket,
when enabled, in `<state>/console.sock` as for the QEMU backend), the 9p
share is `<state>/shared/`.
libvirt-python calls block,
so they run in the default executor. The domain's end (guest poweroff, crash,
QEMU killed) is detected by polling `isActive` and resolves `wait`.
Start-up errors follow the QEMU backend's rules (preflight, then the libvirt
error, the domain's QEMU log and the guest console tail in the ShimError).
The pod network (`use_network`) is plumbed as for the QEMU backend
(qemu/podnet.py, kata_shim.network: taps in the pod netns, `network.json` for
`kata-shim delete`); the taps reach QEMU through the emulator wrapper, which
fetches their fds from `<state>/vm/nics.sock` while libvirt starts it
(nicpass.py). Teardown (`cleanup`, also after QEMU was SIGKILLed) leaves the
netns as CNI made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kata_shim import mounts
from kata_shim.debugconsole import CONSOLE_SOCKET
from kata_shim.errors import FailedPrecondition, ShimError, Unavailable
from kata_shim.image.rootfs import loader_for
from kata_shim.sandbox.base import PodNetworkRequest, Sandbox, SandboxSpec, register_backend
from kata_shim.sandbox.diagnostics import (
    agent_channel,
    agent_silent,
    block,
    log_start_failure,
    logged_start,
    tail,
)
from kata_shim.sandbox.dial import UnixAddress
from kata_shim.sandbox.libvirt.domain import DomainSpec, domain_xml
from kata_shim.sandbox.libvirt.emulator import install_wrapper
from kata_shim.sandbox.libvirt.nicpass import NicHandoff
from kata_shim.sandbox.owners import Owners
from kata_shim.sandbox.preflight import Origin, launch_problems, qemu_config
from kata_shim.sandbox.qemu.accel import choose_accel
from kata_shim.sandbox.qemu.cmdline import AGENT_PORT, kernel_command_line
from kata_shim.sandbox.qemu.ownerguard import ATTACH_TIMEOUT, OwnerGuard
from kata_shim.sandbox.qemu.podnet import QemuPodNetwork
from kata_shim.sandbox.share import SharedDir, run_mount
from kata_shim.sandbox.sizing import SizingRequest, size_vm

if TYPE_CHECKING:
    from kata_shim.agent.client import AgentClient

__all__ = ["LibvirtSandbox"]

log = logging.getLogger(__name__)
GUARD_SOCKET = "owner-guard.sock"
NICS_SOCKET = "nics.sock"
T = TypeVar("T")
POLL_INTERVAL = 0.5
LIBVIRT_FIX = (
    "start libvirtd and virtlogd (systemctl start libvirtd virtlogd), "
    "or set uri to the libvirt daemon to use"
)


class LibvirtSandbox(Sandbox):
    backend = "libvirt"
    isolated = True

    def __init__(self, spec: SandboxSpec) -> None:
        super().__init__(spec)
        table = dict(spec.hypervisor.table)
        self.uri = str(table.pop("uri", "qemu:///system"))
        self.origin = Origin(spec.config_source, "hypervisor.libvirt")
        self.table = {**table, "machine_type": table.get("machine_type", "pc")}
        try:
            self.config = qemu_config(self.table, self.origin)
        except ShimError as exc:
            log_start_failure(spec.sandbox_id, exc)
            raise
        self.vm_dir = spec.state_dir / "vm"
        self.share_dir = spec.state_dir / "shared"
        self.name = f"kata-shim-{spec.sandbox_id}"
        self.jail_options: tuple[str, ...] = ()  # extra options for this domain's QEMU jail
        self.owners = Owners()  # what QEMU may chown shared files to (allow_owners)
        self.guard: OwnerGuard | None = None  # answers QEMU's chowns once it runs
        self.network: QemuPodNetwork | None = None  # the pod netns carried in (use_network)
        self._conn: Any = None
        self._domain: Any = None
        self._pid = 0
        self._ended: asyncio.Future[int] | None = None
        self._launched_at = 0.0

    @property
    def pid(self) -> int:
        return self._pid

    def agent_address(self) -> UnixAddress:
        return UnixAddress(self.vm_dir / "agent.sock")

    def use_sizing(self, request: SizingRequest) -> None:
        static = self.spec.static_sandbox_resource_mgmt
        self.config = size_vm(self.config, request, self.table, self.origin, static=static)

    def use_network(self, request: PodNetworkRequest) -> None:
        spec = self.spec
        self.network = QemuPodNetwork(
            spec.sandbox_id, spec.state_dir, request.netns, spec.internetworking_model
        )

    async def configure_guest_network(self, agent: AgentClient) -> None:
        if self.network is not None:
            await self.network.configure_guest(agent)

    def network_interfaces(self) -> list[dict[str, Any]]:
        return self.network.describe() if self.network is not None else []

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _prepare_dirs(self) -> None:
        for directory in (self.vm_dir, self.share_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # libvirt gives QEMU its own mount namespace; rootfs bind mounts made later
        # reach it only through a shared mount point (the QEMU side is a slave copy).
        await run_mount(["mount", "--bind", str(self.share_dir), str(self.share_dir)])
        await run_mount(["mount", "--make-shared", str(self.share_dir)])

    def _domain_spec(
        self, accel: str, emulator: Path, nics: NicHandoff | None = None
    ) -> DomainSpec:
        debug_console = self.config.debug_console_enabled
        cmdline = kernel_command_line(self.config, accel, tsc_khz=0, debug_console=debug_console)
        share = self.share_dir if self.config.shared_fs == "virtio-9p" else None
        return DomainSpec(
            name=self.name,
            emulator=str(emulator),
            kernel=self.config.kernel,
            initrd=self.config.initrd or str(loader_for(self.config.image)),
            cmdline=cmdline,
            memory_mib=self.config.default_memory,
            vcpus=self.config.default_vcpus,
            domain_type="kvm" if accel == "kvm" else "qemu",
            machine=self.config.machine_type,
            console=self.vm_dir / "console.log",
            agent_socket=self.vm_dir / "agent.sock",
            share=share,
            image=self.config.image,
            tb_size_mb=self.config.tcg_tb_size_mb,
            free_page_reporting=self.config.enable_balloon_free_page_reporting,
            console_socket=self.spec.state_dir / CONSOLE_SOCKET if debug_console else None,
            jail_options=self.jail_options,
            wrapper_env=tuple(nics.env.items()) if nics is not None else (),
        )

    async def start(self) -> None:
        await logged_start(self.spec.sandbox_id, self._start())

    async def _open(self) -> None:
        import libvirt  # only when this backend is configured

        try:
            self._conn = await self._call(libvirt.open, self.uri)
        except libvirt.libvirtError as exc:
            raise FailedPrecondition(
                f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()} "
                f"({self.origin.key('uri')}); fix: {LIBVIRT_FIX}"
            ) from exc

    async def _create_domain(self, xml: str) -> None:
        import libvirt

        self._launched_at = time.monotonic()
        try:
            self._domain = await self._call(self._conn.createXML, xml, 0)
        except libvirt.libvirtError as exc:
            raise Unavailable(
                f"libvirt ({self.uri}) could not start domain {self.name}: "
                f"{exc.get_error_message()}{block('its QEMU log', self._qemu_log(), False)}"
            ) from exc

    def _qemu_log(self) -> list[str]:
        return tail(Path(f"/var/log/libvirt/qemu/{self.name}.log"), 6)

    async def _start(self) -> None:
        problems = launch_problems(self.table, self.origin)
        if problems:
            raise problems[0].error()
        await self._open()
        await self._prepare_dirs()
        accel = choose_accel(self.config.accel)
        emulator = install_wrapper(self.config.path)
        self.guard = OwnerGuard(self.spec.sandbox_id, self.vm_dir / GUARD_SOCKET)
        self.guard.allow(self.owners)
        self.jail_options = (*self.jail_options, *self.guard.jail_options())
        await self._launch(accel, emulator)
        self._pid = _read_pid(Path(f"/run/libvirt/qemu/{self.name}.pid"))
        self._ended = asyncio.ensure_future(self._watch())
        try:
            await self.guard.attach(ATTACH_TIMEOUT)
            await self._await_agent()
        except BaseException:
            await self.stop(timeout=1)
            raise

    async def _launch(self, accel: str, emulator: Path) -> None:
        """Plumb the pod network, then create the domain; its wrapper fetches the taps."""
        nics = await self.network.prepare() if self.network is not None else []
        handoff = None
        try:
            if nics:
                handoff = NicHandoff(self.vm_dir / NICS_SOCKET, self.config.machine_type, nics)
            xml = domain_xml(self._domain_spec(accel, emulator, handoff))
            serving = asyncio.ensure_future(handoff.serve(ATTACH_TIMEOUT)) if handoff else None
            try:
                await self._create_domain(xml)
            finally:
                if serving is not None:
                    await _finish(serving)
        finally:
            if handoff is not None:
                handoff.close()
            if self.network is not None:
                self.network.close_fds()  # QEMU holds the taps now (or nobody does)

    async def _watch(self) -> int:
        while True:
            try:
                active = await self._call(self._domain.isActive)
            except Exception:  # domain gone (transient domains vanish when destroyed)
                active = 0
            if not active:
                log.info("sandbox %s: domain %s is gone", self.spec.sandbox_id, self.name)
                return 0
            await asyncio.sleep(POLL_INTERVAL)

    def _check_alive(self) -> None:
        if self._ended is not None and self._ended.done():
            raise self._ended_error()

    def _agent_silent(self, last_error: Exception | None) -> ShimError:
        return agent_silent(
            self.dial_timeout,
            agent_channel(self.agent_address(), AGENT_PORT),
            f"last dial error: {last_error}; libvirt domain {self.name} is still running",
            Origin(self.spec.config_source, "agent.kata"),
            self.vm_dir / "console.log",
        )

    def _ended_error(self) -> ShimError:
        return Unavailable(
            f"libvirt domain {self.name} ended {time.monotonic() - self._launched_at:.1f}s "
            f"after launch, before the guest agent answered"
            f"{block('its QEMU log', self._qemu_log(), False)}"
            f"{block('last lines of the guest console', tail(self.vm_dir / 'console.log'), False)}"
        )

    async def share(
        self, container_id: str, name: str, host_path: Path, *, readonly: bool = False
    ) -> str:
        if name == "rootfs" and self.network is not None:  # a container joins the pod
            await self.network.log_unplugged(container_id)
        shared = SharedDir(self.share_dir)
        return await shared.share(container_id, name, host_path, readonly=readonly)

    async def unshare(self, container_id: str) -> None:
        await SharedDir(self.share_dir).unshare(container_id)

    def allow_owners(self, owners: Owners) -> None:
        self.owners = self.owners | owners
        if self.guard is not None:
            self.guard.allow(owners)

    async def wait(self) -> int:
        return await asyncio.shield(self._ended) if self._ended is not None else 0

    async def stop(self, timeout: float = 10.0) -> None:
        self._drop_answered()
        if self._domain is None:
            return
        with contextlib.suppress(Exception):
            await self._call(self._domain.destroy)
        if self._ended is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._ended), timeout)

    async def cleanup(self) -> None:
        await self.stop(timeout=5)
        if self._ended is not None and not self._ended.done():
            self._ended.cancel()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._call(self._conn.close)
            self._conn = None
        if self.guard is not None:
            self.guard.close()  # QEMU is gone: nothing left to answer
        if self.network is not None:
            await self.network.teardown()
        await SharedDir(self.share_dir).unshare_all()
        mounts.unmount_all_under(self.spec.state_dir)
        mounts.remove_tree(self.spec.state_dir)


async def _finish(serving: asyncio.Future[None]) -> None:
    """After createXML: the handoff is done (or failed with it); never left running."""
    if not serving.done():
        serving.cancel()
    await asyncio.wait([serving])
    if not serving.cancelled() and serving.exception() is not None:
        log.warning("pod NIC handoff to libvirt's QEMU failed: %s", serving.exception())


def _read_pid(path: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return 0


register_backend("libvirt", LibvirtSandbox)
