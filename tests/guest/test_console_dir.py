"""The agent's console directory: a temporary one (deep state directory) never outlives it."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.config.schema import AgentConfig
from kata_shim.guest.sandbox import CONSOLE_TEMP_PREFIX, GuestSandbox
from kata_shim.sandbox.base import SandboxSpec
from kata_shim.sandbox.local import LocalSandbox

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR (and tempfile's) for this test alone: what is left there is ours."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def deep(tmp_path: Path) -> Path:
    """A state directory too deep for console sockets under it."""
    return tmp_path / ("fixes-deep-state-" + "d" * 90)


def leftovers(tmp: Path) -> list[str]:
    return sorted(name for name in os.listdir(tmp) if name.startswith(CONSOLE_TEMP_PREFIX))


def test_a_temporary_console_dir_is_made_on_use_and_removed_by_destroy(
    tmp_path: Path, private_tmp: Path
) -> None:
    sandbox = GuestSandbox(deep(tmp_path), reaper=None)  # type: ignore[arg-type]
    assert leftovers(private_tmp) == []  # nothing until a terminal needs it
    first = sandbox.console_path(True)
    assert first is not None and first.parent.parent == private_tmp
    assert leftovers(private_tmp) == [first.parent.name]
    first.write_text("a socket left by a failed start")
    sandbox.destroy()
    assert leftovers(private_tmp) == []
    second = sandbox.console_path(True)  # a terminal after DestroySandbox: a fresh one
    assert second is not None and second.parent.is_dir()
    sandbox.destroy()
    sandbox.destroy()
    assert leftovers(private_tmp) == []


def test_destroy_removes_it_when_releasing_storages_fails(
    tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = GuestSandbox(deep(tmp_path), reaper=None)  # type: ignore[arg-type]
    assert sandbox.console_path(True) is not None

    def fail() -> None:
        raise OSError("umount: busy")

    monkeypatch.setattr(sandbox.storages, "release_all", fail)
    with pytest.raises(OSError, match="busy"):
        sandbox.destroy()
    assert leftovers(private_tmp) == []


def test_the_console_dir_inside_a_short_state_dir_stays_with_it(tmp_path: Path) -> None:
    sandbox = GuestSandbox(tmp_path, reaper=None)  # type: ignore[arg-type]
    path = sandbox.console_path(True)
    assert path is not None and path.parent == tmp_path / "tty"
    sandbox.destroy()
    assert (tmp_path / "tty").is_dir()  # the state directory's owner removes it


def local_spec(tmp_path: Path) -> SandboxSpec:
    state = deep(tmp_path) / "fixes-console-sb"
    return SandboxSpec("fixes-console-sb", state, agent=AgentConfig(dial_timeout=20))


def test_a_local_agent_with_a_deep_state_dir_leaves_no_tty_dir(
    tmp_path: Path, private_tmp: Path
) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(local_spec(tmp_path))
        try:
            await sandbox.start()
        finally:
            await sandbox.cleanup()
        assert await sandbox.wait() == 0

    asyncio.run(main())
    assert leftovers(private_tmp) == []


def test_a_local_agent_that_cannot_serve_leaves_no_tty_dir(
    tmp_path: Path, private_tmp: Path
) -> None:
    async def main() -> None:
        sandbox = LocalSandbox(local_spec(tmp_path))
        sandbox.socket_path = Path("/nonexistent-fixes-dir/agent.sock")  # the agent cannot bind
        with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
            await sandbox.start()
        assert await sandbox.wait() not in (0, None)
        await sandbox.cleanup()

    asyncio.run(main())
    assert leftovers(private_tmp) == []
