"""The local backend under a long state root: the agent's socket is past the sun_path limit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.config.schema import AgentConfig
from kata_shim.sandbox.base import SandboxSpec
from kata_shim.sandbox.local import LocalSandbox
from kata_shim.unixpath import SUN_PATH_MAX

pytestmark = [pytest.mark.timeout(60)]


def test_the_agent_serves_when_its_socket_path_exceeds_sun_path(tmp_path: Path) -> None:
    root = tmp_path / ("fixes-long-state-root-" + "r" * 40)
    sandbox_id = "f" * 64  # a CRI sandbox id
    spec = SandboxSpec(sandbox_id, root / sandbox_id, agent=AgentConfig(dial_timeout=20))

    async def main() -> None:
        sandbox = LocalSandbox(spec)
        assert len(os.fsencode(sandbox.socket_path)) > SUN_PATH_MAX
        try:
            await sandbox.start()
            assert sandbox.socket_path.is_socket()  # where the docs say, not elsewhere
            client = await sandbox.connect_agent()
            client.close()
            await client.wait_closed()
        finally:
            await sandbox.cleanup()
        assert await sandbox.wait() == 0
        assert not spec.state_dir.exists()

    asyncio.run(main())


def test_a_socket_no_alias_can_reach_fails_start_with_the_fix(tmp_path: Path) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(SandboxSpec("fixes-sb", tmp_path / "state"))
        sandbox.socket_path = sandbox.spec.state_dir / ("a" * 120 + ".sock")
        with pytest.raises(errors.InvalidArgument, match=r"sun_path limit.*fix: use a shorter"):
            await sandbox.start()
        assert sandbox.pid == 0  # refused before any agent was spawned
        await sandbox.cleanup()

    asyncio.run(main())
