"""Containers really run in a TCG VM through the QEMU backend; VM death is detected and cleaned."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from qemu.qmp import ExecInterruptedError

from kata_shim import errors, oci
from kata_shim.config.schema import AgentConfig, HypervisorConfig
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox.base import SandboxSpec, create_sandbox
from tests.fakes.agent_env import container_spec, read_all, shared_rootfs
from tests.fakes.vmkeys import vm_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def vm_spec(image: Path, sandbox_id: str, shared_fs: str = "virtio-9p") -> SandboxSpec:
    state = Path(tempfile.mkdtemp(prefix=f"ks-{sandbox_id}-", dir="/tmp"))
    table: dict[str, object] = {**vm_keys(image, initrd=True), "shared_fs": shared_fs}
    return SandboxSpec(
        sandbox_id,
        state,
        hypervisor=HypervisorConfig("qemu", table),
        agent=AgentConfig(dial_timeout=90),
    )


async def run_in_vm(
    agent: AgentServiceClient, sandbox, cid: str, args: list[str]
) -> tuple[bytes, int]:
    root = await sandbox.share(cid, "rootfs", shared_rootfs())
    spec = container_spec(args)
    spec["root"] = {"path": root, "readonly": True}
    await agent.CreateContainer(
        agent_pb2.CreateContainerRequest(container_id=cid, OCI=oci.spec_from_json(spec))
    )
    await agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id=cid))
    await agent.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
    out = await read_all(agent, cid, "")
    status = await agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid))
    return out, status.status


def mounts_under(path: Path) -> list[str]:
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(path))
    ]


def test_two_containers_run_in_the_guest_kernel(guest_image) -> None:
    async def main() -> None:
        sandbox = create_sandbox(vm_spec(guest_image, "vmpod"))
        try:
            await sandbox.start()
            client = await sandbox.connect_agent()
            agent = AgentServiceClient(client)
            await agent.CreateSandbox(agent_pb2.CreateSandboxRequest(sandbox_id="vmpod"))
            out, code = await run_in_vm(agent, sandbox, "c1", ["/bin/sh", "-c", "uname -r; exit 3"])
            assert (
                out.decode().strip() == "6.1.0-56-amd64"
                or out.decode().strip() != os.uname().release
            )
            assert out.decode().strip() != os.uname().release and code == 3
            out2, code2 = await run_in_vm(
                agent, sandbox, "c2", ["/bin/grep", "-m1", "model name", "/proc/cpuinfo"]
            )
            assert b"QEMU" in out2 and code2 == 0
            client.close()
        finally:
            await sandbox.cleanup()
        assert not sandbox.spec.state_dir.exists()

    asyncio.run(main())


@pytest.mark.parametrize("shared_fs", ["virtio-9p", "virtio-fs"])
def test_killed_qemu_is_detected_and_cleaned_up(guest_image, shared_fs: str) -> None:
    """SIGKILL to QEMU: `wait` resolves, cleanup leaves nothing; with virtio-fs, the
    backend ends virtiofsd as soon as QEMU is gone (before any cleanup)."""

    async def main() -> None:
        sandbox = create_sandbox(vm_spec(guest_image, "vmkill", shared_fs))
        await sandbox.start()
        client = await sandbox.connect_agent()
        agent = AgentServiceClient(client)
        root = await sandbox.share("k1", "rootfs", shared_rootfs())
        spec = container_spec(["/bin/sleep", "600"])
        spec["root"] = {"path": root, "readonly": True}
        await agent.CreateContainer(
            agent_pb2.CreateContainerRequest(container_id="k1", OCI=oci.spec_from_json(spec))
        )
        await agent.StartContainer(agent_pb2.StartContainerRequest(container_id="k1"))
        wait = asyncio.ensure_future(
            agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id="k1"))
        )
        assert mounts_under(sandbox.spec.state_dir)
        daemon = sandbox.fs_daemon
        assert (daemon is not None) is (shared_fs == "virtio-fs")
        os.kill(sandbox.pid, signal.SIGKILL)
        assert await asyncio.wait_for(sandbox.wait(), 10) == -signal.SIGKILL
        if daemon is not None:  # ended by the backend's watch, not by cleanup
            await asyncio.wait_for(daemon.wait(), 20)
            assert await asyncio.wait_for(_group_empty(daemon.pid), 20)
        with pytest.raises(errors.Unavailable):
            await asyncio.wait_for(wait, 5)
        await sandbox.cleanup()
        await sandbox.cleanup()
        assert not sandbox.spec.state_dir.exists()
        assert mounts_under(sandbox.spec.state_dir) == []
        leftover = subprocess.run(["pgrep", "-f", str(sandbox.spec.state_dir)], capture_output=True)
        assert leftover.stdout == b""

    asyncio.run(main())


def test_qmp_death_event_ends_the_sandbox(guest_image) -> None:
    """A VM that stops running while QEMU stays up (here: paused, as on an I/O error) is
    reported dead from the QMP event stream, QEMU is killed and `wait` resolves."""

    async def main() -> None:
        sandbox = create_sandbox(vm_spec(guest_image, "vmqmp"))
        try:
            await sandbox.start()
            # the STOP event kills QEMU (by design), which may beat the command's reply
            with contextlib.suppress(ExecInterruptedError):
                await sandbox.qmp("stop")
            assert await asyncio.wait_for(sandbox.wait(), 30) == -signal.SIGKILL
            assert sandbox.death_event == "STOP"
        finally:
            await sandbox.cleanup()
        assert not sandbox.spec.state_dir.exists()

    asyncio.run(main())


async def _group_empty(pgid: int) -> bool:
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.1)


def test_virtiofsd_death_ends_the_vm(guest_image) -> None:
    """virtiofsd killed while the VM runs: the backend treats it as the VM's death."""

    async def main() -> None:
        sandbox = create_sandbox(vm_spec(guest_image, "virtiofs-death", "virtio-fs"))
        try:
            await sandbox.start()
            client = await sandbox.connect_agent()
            agent = AgentServiceClient(client)
            await agent.CreateSandbox(agent_pb2.CreateSandboxRequest(sandbox_id="virtiofs-death"))
            out, code = await run_in_vm(agent, sandbox, "v1", ["/bin/sh", "-c", "echo via-fs"])
            assert out.decode().strip() == "via-fs" and code == 0
            client.close()
            assert sandbox.fs_daemon is not None
            os.killpg(sandbox.fs_daemon.pid, signal.SIGKILL)
            assert await asyncio.wait_for(sandbox.wait(), 30) == -signal.SIGKILL
            assert "virtiofsd" in sandbox.death_event and "signal 9" in sandbox.death_event
        finally:
            await sandbox.cleanup()
        assert not sandbox.spec.state_dir.exists()
        leftover = subprocess.run(["pgrep", "-f", str(sandbox.spec.state_dir)], capture_output=True)
        assert leftover.stdout == b""

    asyncio.run(main())
