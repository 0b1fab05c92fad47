"""A TCG VM on a real CNI pod network: tap fd -> QEMU virtio-net -> guest NIC set up by our agent.

The test launches QEMU itself with qemu/cmdline.build_command(..., nics=) (the backend
is wired by task/ later) and speaks to the agent over its virtio-serial socket. From the
test's host netns the pod's IPv4 and IPv6 addresses (now the guest's) answer ping;
after QEMU is SIGKILLed, teardown leaves the pod netns exactly as CNI made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from kata_shim import oci
from kata_shim.devenv.vm import host_tsc_khz
from kata_shim.network import plumbing
from kata_shim.proto import agent_pb2, types_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox.base import create_sandbox
from kata_shim.sandbox.qemu.accel import choose_accel
from kata_shim.sandbox.qemu.cmdline import QemuConfig, SandboxPaths, build_command
from kata_shim.sandbox.qemu.netdev import nic_fds
from kata_shim.ttrpc.client import Client
from tests.fakes.agent_env import container_spec, shared_rootfs
from tests.network.conftest import Pod
from tests.sandbox.qemu.test_vm import run_in_vm, vm_spec

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]


class Agent:
    """The networking calls over a raw AgentServiceClient (AgentClient's shape)."""

    def __init__(self, client: Client) -> None:
        self.svc = AgentServiceClient(client)

    async def update_interface(self, interface: types_pb2.Interface) -> types_pb2.Interface:
        return await self.svc.UpdateInterface(agent_pb2.UpdateInterfaceRequest(interface=interface))

    async def update_routes(self, routes: Iterable[types_pb2.Route]) -> list[types_pb2.Route]:
        req = agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=list(routes)))
        return list((await self.svc.UpdateRoutes(req)).Routes)

    async def add_arp_neighbors(self, neighbors: Iterable[types_pb2.ARPNeighbor]) -> None:
        req = agent_pb2.ARPNeighbors(ARPNeighbors=list(neighbors))
        await self.svc.AddARPNeighbors(agent_pb2.AddARPNeighborsRequest(neighbors=req))


async def _dial(path: Path, deadline: float) -> Client:
    while True:
        try:
            return await Client.connect_unix(str(path), timeout=2)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _configure(path: Path, net: plumbing.PodNetwork) -> list[types_pb2.Interface]:
    client = await _dial(path, time.monotonic() + 120)
    try:
        agent = Agent(client)
        await plumbing.configure_guest(agent, net)
        listed = await agent.svc.ListInterfaces(agent_pb2.ListInterfacesRequest())
        return list(listed.Interfaces)
    finally:
        client.close()


def _ping(pod: Pod, address: str) -> str:
    out = ""
    for _ in range(10):  # the first ARP round trip through TCG can take a while
        done = subprocess.run(
            ["nsenter", f"--net={pod.host.netns}", "busybox", "ping", "-c1", "-W3", address],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        out = done.stdout
        if done.returncode == 0:
            return out
    raise AssertionError(f"{address} does not answer from the host netns: {out}")


def test_pod_ip_answers_from_the_vm_and_sigkill_teardown_restores_the_netns(
    guest_image: Path, pod: Pod
) -> None:
    before = pod.snapshot()
    net = plumbing.prepare(pod.spec)
    work = Path(tempfile.mkdtemp(prefix=f"{pod.host.marker}-vm-"))
    (work / "shared").mkdir()
    paths = SandboxPaths(
        work / "qmp.sock", work / "agent.sock", work / "console.log", work / "shared"
    )
    config = QemuConfig(  # the whole guest as an initramfs: no root image disk
        kernel=str(guest_image / "vmlinux"),
        initrd=str(guest_image / "kata-shim-initrd.img"),
        image="",
    )
    nics = net.nics()
    argv = build_command(config, paths, choose_accel("auto"), host_tsc_khz(), nics=nics)
    assert f"tap,id=net0,fd={nics[0].fd}" in argv
    assert f"virtio-net-device,netdev=net0,mac={pod.eth0.mac}" in argv
    proc = None
    try:
        with open(work / "qemu.log", "wb") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                pass_fds=nic_fds(nics), start_new_session=True,
            )  # fmt: skip
        net.close_fds()  # QEMU holds the tap now
        listed = asyncio.run(_configure(paths.agent, net))
        eth0 = next(i for i in listed if i.name == "eth0")
        assert eth0.hwAddr == pod.eth0.mac
        pod_ip = pod.eth0.ips[0].split("/")[0]
        assert pod_ip in {a.address for a in eth0.IPAddresses}
        assert "1 packets received" in _ping(pod, pod_ip)
        pod_ip6 = next(ip.split("/")[0] for ip in pod.eth0.ips if ":" in ip)
        assert pod_ip6 in {a.address for a in eth0.IPAddresses}
        assert "1 packets received" in _ping(pod, pod_ip6)  # IPv6 through the same tap
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert "tap0_kata" not in pod.sh("ip", "-o", "link")  # gone with QEMU
        plumbing.teardown(net)
        assert pod.snapshot() == before
    except BaseException:
        print((work / "console.log").read_text(errors="replace")[-3000:])
        print((work / "qemu.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=30)
        plumbing.teardown(net)
        shutil.rmtree(work, ignore_errors=True)


def test_containers_of_a_vm_pod_talk_over_localhost(guest_image: Path) -> None:
    """The agent brings lo up in the guest netns all containers share (issue 15)."""

    async def main() -> None:
        sandbox = create_sandbox(vm_spec(guest_image, "net-lo"))
        try:
            await sandbox.start()
            client = await sandbox.connect_agent()
            agent = AgentServiceClient(client)
            await agent.CreateSandbox(agent_pb2.CreateSandboxRequest(sandbox_id="net-lo"))
            root = await sandbox.share("srv", "rootfs", shared_rootfs())
            spec = container_spec(["/bin/sh", "-c", "echo from-srv | nc -l -p 9000"])
            spec["root"] = {"path": root, "readonly": True}
            await agent.CreateContainer(
                agent_pb2.CreateContainerRequest(container_id="srv", OCI=oci.spec_from_json(spec))
            )
            await agent.StartContainer(agent_pb2.StartContainerRequest(container_id="srv"))
            script = (
                "for i in $(seq 20); do nc -w 3 127.0.0.1 9000 && exit 0; sleep 0.5; done; exit 1"
            )
            out, code = await run_in_vm(agent, sandbox, "cli", ["/bin/sh", "-c", script])
            assert (out, code) == (b"from-srv\n", 0)
            client.close()
        finally:
            await sandbox.cleanup()

    asyncio.run(main())
