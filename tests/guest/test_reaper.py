"""The agent's reaper and spawn helpers, with real child processes (no runc).

The tests install the reaper in the pytest process without PR_SET_CHILD_SUBREAPER
(that flag would outlive the test); the subreaper case runs in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from kata_shim import errors
from kata_shim.guest import spawn
from kata_shim.guest.reaper import Reaper, exit_code

pytestmark = [pytest.mark.timeout(30)]


@asynccontextmanager
async def reaper() -> AsyncIterator[Reaper]:
    r = Reaper()
    r.install(asyncio.get_running_loop(), subreaper=False)
    try:
        yield r
    finally:
        r.uninstall()


def run(test: Callable[[Reaper], Awaitable[None]]) -> None:
    async def main() -> None:
        async with reaper() as r:
            await test(r)

    asyncio.run(main())


def test_exit_code_of_wait_statuses() -> None:
    assert exit_code(0) == 0
    assert exit_code(7 << 8) == 7
    assert exit_code(signal.SIGKILL) == 137
    assert exit_code(signal.SIGTERM | 0x80) == 143  # core dumped


def test_real_exit_codes_and_signals() -> None:
    async def test(r: Reaper) -> None:
        cases = {"exit 7": 7, "exit 0": 0, "kill -TERM $$": 143, "kill -KILL $$": 137}
        for script, expected in cases.items():
            pid = spawn.spawn(["sh", "-c", script], {})
            assert await asyncio.wait_for(r.exited(pid), 5) == expected, script

    run(test)


def test_exit_before_anyone_asks_is_stashed() -> None:
    async def test(r: Reaper) -> None:
        pid = spawn.spawn(["sh", "-c", "exit 5"], {})
        for _ in range(200):
            if r.stashed:
                break
            await asyncio.sleep(0.01)
        assert r.stashed == 1 and r.waiting == 0
        assert await asyncio.wait_for(r.exited(pid), 1) == 5
        assert r.stashed == 0

    run(test)


def test_waiters_for_one_pid_share_the_exit() -> None:
    async def test(r: Reaper) -> None:
        pid = spawn.spawn(["sleep", "0.1"], {})
        first, second = r.exited(pid), r.exited(pid)
        assert first is second
        assert await asyncio.wait_for(first, 5) == 0

    run(test)


def test_run_captures_output_and_stderr() -> None:
    async def test(r: Reaper) -> None:
        assert await spawn.run(r, ["sh", "-c", "echo out; exit 3"], capture=True) == (3, b"out\n")
        code, output = await spawn.run(r, ["sh", "-c", "echo err >&2"], stderr=True)
        assert (code, output) == (0, b"err\n")
        big = await spawn.run(r, ["head", "-c", "300000", "/dev/zero"], capture=True)
        assert big == (0, bytes(300000))

    run(test)


def test_run_timeout_kills_the_process() -> None:
    async def test(r: Reaper) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(errors.DeadlineExceeded):
            await spawn.run(r, ["sh", "-c", "exec sleep 30"], timeout=0.3)
        assert loop.time() - started < 2
        for _ in range(100):  # the killed sleep is reaped (no waiter left behind)
            if not r.waiting:
                break
            await asyncio.sleep(0.01)
        assert r.waiting == 0

    run(test)


def test_run_timeout_covers_a_grandchild_holding_the_output_pipe() -> None:
    async def test(r: Reaper) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(errors.DeadlineExceeded):  # sh exits at once; `sleep` keeps stdout
            await spawn.run(r, ["sh", "-c", "sleep 1 & exit 0"], timeout=0.3, capture=True)
        assert loop.time() - started < 0.9

    run(test)


def test_children_start_with_default_signals_and_an_empty_mask() -> None:
    async def test(r: Reaper) -> None:
        script = "grep -E '^Sig(Ign|Blk)' /proc/self/status"
        code, output = await spawn.run(r, ["sh", "-c", script], capture=True)
        fields = dict(line.split(":\t") for line in output.decode().splitlines())
        ignored = int(fields["SigIgn"], 16)
        assert code == 0 and int(fields["SigBlk"], 16) == 0
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            assert not ignored & (1 << (sig - 1)), sig

    run(test)


SUBREAPER_CHILD = """
import asyncio, json, os
from kata_shim.guest import spawn
from kata_shim.guest.reaper import Reaper

async def main():
    r = Reaper()
    r.install(asyncio.get_running_loop())   # as the agent does: subreaper on
    code, out = await spawn.run(r, ["sh", "-c", "sleep 0.2 & echo $!; exit 4"], capture=False)
    # the orphaned sleep is reparented to us; its exit arrives through the same loop
    for _ in range(300):
        if r.stashed:
            break
        await asyncio.sleep(0.01)
    print(json.dumps({"code": code, "stashed": r.stashed}))

asyncio.run(main())
"""


def test_subreaper_collects_orphaned_grandchildren() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SUBREAPER_CHILD],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"code": 4, "stashed": 1}
