"""The local backend: registry, lifecycle, failure handling and cleanup."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.config.schema import AgentConfig, HypervisorConfig
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox.base import (
    PodNetworkRequest,
    SandboxSpec,
    available_backends,
    create_sandbox,
)
from kata_shim.sandbox.local import HostProcess, LocalSandbox, run_host
from tests.fakes.agent_env import create_request
from tests.fakes.rootfs import oci_spec

pytestmark = [pytest.mark.timeout(60)]


def spec(tmp_path: Path, sandbox_id: str = "sb", **agent) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=sandbox_id, state_dir=tmp_path / "state", agent=AgentConfig(**agent)
    )


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_registry_builds_local_and_rejects_unknown(tmp_path) -> None:
    assert {"local", "qemu", "libvirt"} <= set(available_backends())
    sandbox = create_sandbox(spec(tmp_path))
    assert isinstance(sandbox, LocalSandbox) and sandbox.isolated is False and sandbox.pid == 0
    with pytest.raises(errors.InvalidArgument, match="unknown sandbox backend"):
        other = HypervisorConfig("firecracker")
        create_sandbox(SandboxSpec("sb", tmp_path / "state", hypervisor=other))


def test_start_warns_not_isolated_and_stop_cleanup_are_idempotent(tmp_path, caplog) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(spec(tmp_path))
        with caplog.at_level(logging.WARNING):
            await sandbox.start()
        assert "containers are NOT isolated in a VM (development/CI only)" in caplog.text
        assert sandbox.pid > 0 and (tmp_path / "state" / "agent.sock").exists()
        assert os.getpgid(sandbox.pid) == sandbox.pid  # its own process group
        assert await sandbox.share("c", "rootfs", Path("/some/rootfs")) == "/some/rootfs"
        client = await sandbox.connect_agent()
        client.close()
        await client.wait_closed()
        await sandbox.stop()
        await sandbox.stop()
        assert await sandbox.wait() == 0  # clean exit on SIGTERM
        assert "agent ready" in (tmp_path / "state" / "agent.log").read_text()
        await sandbox.cleanup()
        await sandbox.cleanup()
        assert not (tmp_path / "state").exists()

    asyncio.run(main())


def test_the_connection_start_checked_is_the_first_connect_and_stop_closes_it(tmp_path) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(spec(tmp_path))
        await sandbox.start()
        kept = sandbox._answered
        assert kept is not None and not kept.closed
        first = await sandbox.connect_agent()  # no second dial and Health.Check
        assert first is kept and sandbox._answered is None
        second = await sandbox.connect_agent()
        assert second is not first and not second.closed
        for client in (first, second):
            client.close()
        unused = LocalSandbox(spec(tmp_path / "unused", "sb2"))
        await unused.start()
        held = unused._answered
        assert held is not None
        await unused.stop()  # never connected: stop closes what start kept
        assert held.closed and unused._answered is None
        await unused.cleanup()
        await sandbox.cleanup()

    asyncio.run(main())


def test_after_destroy_sandbox_stop_kills_without_a_grace_period(tmp_path) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(spec(tmp_path))
        await sandbox.start()
        await sandbox.stop()  # graceful: SIGTERM, the agent exits 0
        assert await sandbox.wait() == 0
        await sandbox.cleanup()
        destroyed = LocalSandbox(spec(tmp_path / "d", "sb2"))
        await destroyed.start()
        destroyed.agent_destroyed()
        await destroyed.stop()
        assert await destroyed.wait() == -signal.SIGKILL
        await destroyed.cleanup()
        assert not (tmp_path / "d" / "state").exists()

    asyncio.run(main())


def test_start_fails_cleanly_when_the_agent_cannot_serve(tmp_path) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(spec(tmp_path, dial_timeout=5))
        sandbox.socket_path = Path("/nonexistent-dir/agent.sock")  # agent cannot bind
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            await sandbox.start()
        assert sandbox._proc is not None and sandbox._proc.returncode not in (None, 0)
        await sandbox.cleanup()

    asyncio.run(main())


def test_connect_agent_gives_up_at_the_dial_timeout(tmp_path) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(spec(tmp_path, dial_timeout=0.3))  # never started
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(errors.DeadlineExceeded, match="timed out connecting"):
            await sandbox.connect_agent()
        assert loop.time() - started < 2

    asyncio.run(main())


def test_an_agent_crash_takes_its_containers_and_cgroups_with_it(tmp_path) -> None:
    """As a VM's containers die with it: once wait() reports the agent's death, its
    containers are killed and deleted (stop() after that has nothing left to do)."""

    async def main() -> None:
        sandbox = LocalSandbox(spec(tmp_path, "crash"))
        await sandbox.start()
        init_pid = 0
        try:
            client = await sandbox.connect_agent()
            agent = AgentServiceClient(client)
            await agent.CreateContainer(create_request("z", oci_spec(["/bin/sleep", "60"])))
            await agent.StartContainer(agent_pb2.StartContainerRequest(container_id="z"))
            init_pid = int((sandbox.agent_state / "containers" / "z" / "init.pid").read_text())
            os.kill(sandbox.pid, signal.SIGKILL)
            assert await sandbox.wait() == -signal.SIGKILL
            client.close()
            await asyncio.sleep(0.1)  # reaped by whoever inherited it
            assert not alive(init_pid)
            root = sandbox.agent_state / "runc"
            listed = subprocess.run(
                ["runc", "--root", str(root), "list", "-q"], capture_output=True
            )
            assert listed.stdout == b""
            assert not Path("/sys/fs/cgroup/memory/kata_shim/crash").exists()
            await sandbox.stop()
        finally:
            if init_pid and alive(init_pid):
                os.kill(init_pid, signal.SIGKILL)
            await sandbox.cleanup()

    asyncio.run(main())


def test_cleanup_never_deletes_through_a_mount(tmp_path) -> None:
    async def main() -> None:
        precious = tmp_path / "precious"
        precious.mkdir()
        (precious / "file").write_text("keep me")
        sandbox = LocalSandbox(spec(tmp_path))
        target = sandbox.spec.state_dir / "agent" / "bound"
        target.mkdir(parents=True)
        subprocess.run(["mount", "--bind", str(precious), str(target)], check=True)
        try:
            await sandbox.cleanup()
        finally:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
        assert (precious / "file").read_text() == "keep me"
        assert not sandbox.spec.state_dir.exists()

    asyncio.run(main())


def test_host_process_status_and_no_leaked_fds(tmp_path) -> None:
    async def main() -> None:
        assert await run_host(["sh", "-c", "exit 3"]) == 3
        assert await run_host(["sh", "-c", "kill -TERM $$"]) == -signal.SIGTERM
        assert await run_host(["sleep", "10"], timeout=0.2) == -signal.SIGKILL
        leaky_r, leaky_w = os.pipe()
        os.set_inheritable(leaky_w, True)
        out = tmp_path / "fds"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC)
        try:
            proc = HostProcess(["sh", "-c", "ls /proc/$$/fd"], stdout=fd, stderr=fd)
            assert await proc.wait() == 0
        finally:
            os.close(fd)
            os.close(leaky_r)
            os.close(leaky_w)
        assert sorted(int(n) for n in out.read_text().split()) == [0, 1, 2]

    asyncio.run(main())


def test_the_agent_joins_the_pod_netns_and_owns_a_uts_namespace(tmp_path) -> None:
    sandbox = LocalSandbox(spec(tmp_path))
    assert "--local-pod" in sandbox._argv() and "--netns" not in sandbox._argv()
    with pytest.raises(errors.InvalidArgument, match="does not exist: the pod's netns must be"):
        sandbox.use_network(PodNetworkRequest(tmp_path / "missing"))
    sandbox.use_network(PodNetworkRequest(Path("/proc/self/ns/net")))
    argv = sandbox._argv()
    assert argv[argv.index("--netns") + 1] == "/proc/self/ns/net"
