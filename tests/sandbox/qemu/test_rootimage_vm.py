"""The shared read-only root image design in a real TCG VM (issue 17).

The guest boots through the loader initramfs, mounts the erofs image on a
read-only virtio-blk disk with a tmpfs overlay, and runs a container; the
image file is not changed by the guest's writes to its root.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from kata_shim.config.schema import AgentConfig, HypervisorConfig
from kata_shim.image import builder
from kata_shim.image.rootfs import ROOTFS_NAME
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox.base import SandboxSpec, create_sandbox
from tests.fakes.vmkeys import vm_keys
from tests.sandbox.qemu.test_vm import run_in_vm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_root_image_boots_read_only_and_runs_a_container(guest_image) -> None:
    image = guest_image / ROOTFS_NAME
    digest = builder.sha256_file(image)
    state = Path(tempfile.mkdtemp(prefix="ks-dense-rootimg-", dir="/tmp"))
    table = vm_keys(guest_image)  # its image is `image`
    spec = SandboxSpec(
        "rootimg",
        state,
        hypervisor=HypervisorConfig("qemu", table),
        agent=AgentConfig(dial_timeout=120),
    )

    async def main() -> None:
        sandbox = create_sandbox(spec)
        try:
            await sandbox.start()
            client = await sandbox.connect_agent()
            agent = AgentServiceClient(client)
            await agent.CreateSandbox(agent_pb2.CreateSandboxRequest(sandbox_id="rootimg"))
            script = "cat /sys/block/vda/ro; uname -r"
            out, status = await run_in_vm(agent, sandbox, "c1", ["/bin/sh", "-c", script])
            assert status == 0, out
            assert out.split()[0] == b"1", out  # the guest sees a read-only disk
            client.close()
        finally:
            await sandbox.cleanup()

    asyncio.run(main())
    assert builder.sha256_file(image) == digest
