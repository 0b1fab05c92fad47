"""The local backend: registry, lifecycle, failure handling and cleanup."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.sandbox.base import SandboxSpec, available_backends, create_sandbox
from kata_shim.sandbox.local import LocalSandbox

pytestmark = [pytest.mark.timeout(60)]


def spec(tmp_path: Path, **agent) -> SandboxSpec:
    return SandboxSpec(sandbox_id="sb", state_dir=tmp_path / "state", agent=agent)


def test_registry_builds_local_and_rejects_unknown(tmp_path) -> None:
    assert {"local", "qemu", "libvirt"} <= set(available_backends())
    sandbox = create_sandbox("local", spec(tmp_path))
    assert isinstance(sandbox, LocalSandbox) and sandbox.isolated is False and sandbox.pid == 0
    with pytest.raises(errors.InvalidArgument, match="unknown sandbox backend"):
        create_sandbox("firecracker", spec(tmp_path))


def test_start_warns_not_isolated_and_stop_cleanup_are_idempotent(tmp_path, caplog) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(spec(tmp_path))
        with caplog.at_level(logging.WARNING):
            await sandbox.start()
        assert "NOT isolated" in caplog.text
        assert sandbox.pid > 0 and (tmp_path / "state" / "agent.sock").exists()
        client = await sandbox.connect_agent()
        client.close()
        await client.wait_closed()
        await sandbox.stop()
        await sandbox.stop()
        assert await sandbox.wait() == 0  # clean exit on SIGTERM
        await sandbox.cleanup()
        await sandbox.cleanup()
        assert not (tmp_path / "state").exists()

    asyncio.run(main())


def test_start_fails_cleanly_when_the_agent_cannot_serve(tmp_path) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(spec(tmp_path, dial_timeout=5))
        sandbox.socket_path = Path("/nonexistent-dir/agent.sock")  # agent cannot bind
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            await sandbox.start()
        assert sandbox._proc is not None and sandbox._proc.returncode is not None
        await sandbox.cleanup()

    asyncio.run(main())
