"""The libvirt backend: domain XML, and a container run in a libvirt-managed TCG VM."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import pytest

from kata_shim import oci
from kata_shim.config.schema import AgentConfig, HypervisorConfig
from kata_shim.devenv.libvirtd import LibvirtDaemons
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox.base import SandboxSpec, create_sandbox
from kata_shim.sandbox.libvirt.domain import DomainSpec, domain_xml
from tests.fakes.agent_env import container_spec, read_all, shared_rootfs


def test_domain_xml_has_what_the_guest_needs() -> None:
    spec = DomainSpec(
        "kata-shim-x",
        "/usr/bin/qemu-system-x86_64",
        "/k",
        "/i",
        "console=ttyS0 a=b",
        512,
        1,
        "qemu",
        "pc",
        Path("/s/vm/console.log"),
        Path("/s/vm/agent.sock"),
        Path("/s/shared"),
    )
    root = ElementTree.fromstring(domain_xml(spec))
    assert root.get("type") == "qemu"
    assert root.find("features/acpi") is not None
    assert root.findtext("on_poweroff") == "destroy"
    channel = root.find("devices/channel")
    assert channel.find("target").get("name") == "agent.channel.0"
    assert channel.find("source").get("path") == "/s/vm/agent.sock"
    fs = root.find("devices/filesystem")
    assert fs.get("accessmode") == "passthrough" and fs.find("target").get("dir") == "kataShared"
    assert root.find("seclabel/label").text == "+0:+0"
    assert root.findtext("os/cmdline") == "console=ttyS0 a=b"
    assert root.find("devices/memballoon").get("model") == "none"
    assert root.find("devices/disk") is None and root.find("features/tcg") is None


def test_domain_xml_root_image_balloon_and_tb_cache() -> None:
    spec = DomainSpec(
        "kata-shim-x",
        "/usr/bin/qemu-system-x86_64",
        "/k",
        "/img/kata-shim-loader.img",
        "console=ttyS0",
        512,
        1,
        "qemu",
        "pc",
        Path("/s/vm/console.log"),
        Path("/s/vm/agent.sock"),
        None,
        image="/img/kata-shim-rootfs.img",
        tb_size_mb=32,
        free_page_reporting=True,
    )
    root = ElementTree.fromstring(domain_xml(spec))
    disk = root.find("devices/disk")
    assert disk.find("source").get("file") == "/img/kata-shim-rootfs.img"
    assert disk.find("readonly") is not None and disk.find("driver").get("cache") == "none"
    balloon = root.find("devices/memballoon")
    assert (balloon.get("model"), balloon.get("freePageReporting")) == ("virtio", "on")
    assert root.findtext("features/tcg/tb-cache") == "32"
    kvm = ElementTree.fromstring(domain_xml(replace(spec, domain_type="kvm")))
    assert kvm.find("features/tcg") is None


@pytest.fixture(scope="module")
def libvirtd():
    missing = [b for b in ("libvirtd", "virtlogd", "virsh") if shutil.which(b) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/dev.sh setup")
    daemons = LibvirtDaemons()
    daemons.start()
    yield daemons
    daemons.stop()
    shutil.rmtree(daemons.work, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_container_runs_in_a_libvirt_domain(guest_image, libvirtd) -> None:
    async def main() -> None:
        state = Path(tempfile.mkdtemp(prefix="ks-lv-", dir="/tmp"))
        table = {
            "kernel": str(guest_image / "vmlinux"),
            "image": str(guest_image / "kata-shim-rootfs.img"),  # the default design
        }
        hypervisor = HypervisorConfig("libvirt", table)
        sandbox = create_sandbox(
            SandboxSpec("lv1", state, hypervisor=hypervisor, agent=AgentConfig(dial_timeout=120))
        )
        try:
            await sandbox.start()
            assert sandbox.pid > 0
            client = await sandbox.connect_agent()
            agent = AgentServiceClient(client)
            root = await sandbox.share("c1", "rootfs", shared_rootfs())
            spec = container_spec(["/bin/sh", "-c", "uname -r; exit 5"])
            spec["root"] = {"path": root, "readonly": True}
            await agent.CreateContainer(
                agent_pb2.CreateContainerRequest(container_id="c1", OCI=oci.spec_from_json(spec))
            )
            await agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id="c1"))
            await agent.StartContainer(agent_pb2.StartContainerRequest(container_id="c1"))
            out = await read_all(agent, "c1", "")
            status = await agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id="c1"))
            assert out.strip() and out.decode().strip() != os.uname().release
            assert status.status == 5
            client.close()
        finally:
            await sandbox.cleanup()
        assert not state.exists()
        assert await asyncio.wait_for(sandbox.wait(), 10) == 0

    asyncio.run(main())
