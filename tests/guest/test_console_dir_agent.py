"""A real local agent under a deep state root runs a terminal container (runc, console socket
in a temporary directory) and leaves no /tmp/kata-agent-tty-* behind; its own socket is past
the sun_path limit too (kata_shim/unixpath.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from kata_shim.config.schema import AgentConfig
from kata_shim.guest.sandbox import CONSOLE_TEMP_PREFIX
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox.base import SandboxSpec
from kata_shim.sandbox.local import LocalSandbox
from kata_shim.unixpath import SUN_PATH_MAX
from tests.fakes.agent_env import create_request, read_all
from tests.fakes.rootfs import oci_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def leftovers(tmp: Path) -> list[str]:
    return sorted(name for name in os.listdir(tmp) if name.startswith(CONSOLE_TEMP_PREFIX))


async def run_terminal(agent: AgentServiceClient, cid: str, tmp: Path) -> None:
    spec = oci_spec(["/bin/sh", "-c", "tty; exit 3"], terminal=True)
    await agent.CreateContainer(create_request(cid, spec))
    assert len(leftovers(tmp)) == 1  # runc's console socket is in a short temporary directory
    await agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id=cid, exec_id=cid))
    await agent.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
    out = await read_all(agent, cid, cid)
    status = await agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
    assert b"/dev/pts/" in out and status.status == 3
    await agent.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id=cid, timeout=10))


def test_a_deep_local_agent_runs_a_terminal_and_leaves_no_tty_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fixes-tmp-", dir="/tmp"))  # short: sockets go there
    monkeypatch.setenv("TMPDIR", str(tmp))  # the agent's tempfile directory
    try:
        _run_deep_agent(tmp_path, tmp)
    finally:
        shutil.rmtree(tmp)


def _run_deep_agent(tmp_path: Path, tmp: Path) -> None:
    state = tmp_path / ("fixes-deep-root-" + "d" * 60) / "fixes-tty-sb"
    spec = SandboxSpec("fixes-tty-sb", state, agent=AgentConfig(dial_timeout=20))

    async def main() -> None:
        sandbox = LocalSandbox(spec)
        assert len(os.fsencode(sandbox.socket_path)) > SUN_PATH_MAX
        await sandbox.start()
        try:
            client = await sandbox.connect_agent()
            try:
                await run_terminal(AgentServiceClient(client), "fixes-tty", tmp)
            finally:
                client.close()
                await client.wait_closed()
        finally:
            await sandbox.cleanup()
        assert await sandbox.wait() == 0

    asyncio.run(main())
    assert leftovers(tmp) == [] and not state.exists()
