"""Regression (issue 13): an exec's output was lost when the client's FIFO reader opened late.

containerd's client (ctr, CRI) opens its stdout/stderr FIFOs in a goroutine and does not wait
for that open before it sends Exec/Start. Starved of CPU, that goroutine can still be outside
open(2) when a short process has already exited: the shim had written the output into the FIFO
(opened O_RDWR, so we were its only reader) and closed it, the kernel freed the buffered bytes
with the last open file, and the exit was reported. The client's open then found an empty FIFO
with no writer: `ctr task exec … echo x389` returned 0 with no output.

The delays below stand in for that starvation deterministically.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kata_shim.io.stdio import HostStdio, open_host_stdio
from tests.task.harness import harness

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


async def _open_stdout(fifo: Path, stall_timeout: float = 2.0) -> HostStdio:
    return await open_host_stdio(
        "", str(fifo), "", terminal=False, container_id="c1", namespace="ns1",
        stall_timeout=stall_timeout,
    )  # fmt: skip


async def read_to_eof(fd: int, timeout: float = 10.0) -> bytes:
    """Everything readable from a non-blocking fd until EOF (no writer left)."""
    got = bytearray()
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.002)
                continue
            if not chunk:
                return bytes(got)
            got += chunk


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_buffered_fifo_output_waits_for_a_reader_that_opens_after_the_close(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "e389-stdout"
    os.mkfifo(fifo)
    host = await _open_stdout(fifo)
    assert host.stdout is not None
    await host.stdout.write(b"x389\n")
    closing = asyncio.create_task(host.close())  # the process exited: the shim closes its end
    await asyncio.sleep(0.2)  # ... while the client's reader is still starved
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert await read_to_eof(reader) == b"x389\n"
    finally:
        os.close(reader)
    await asyncio.wait_for(closing, 5)


async def test_close_waits_until_a_present_reader_took_the_bytes(tmp_path: Path) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opened, but not reading yet
    try:
        host = await _open_stdout(fifo)
        assert host.stdout is not None
        await host.stdout.write(b"tail")
        closing = asyncio.create_task(host.close())
        await asyncio.sleep(0.2)
        assert not closing.done()  # the bytes are still in the FIFO: not closed yet
        assert await read_to_eof(reader) == b"tail"
        await asyncio.wait_for(closing, 5)
    finally:
        os.close(reader)


async def test_nobody_ever_reading_bounds_the_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    host = await _open_stdout(fifo, stall_timeout=0.3)
    assert host.stdout is not None
    await host.stdout.write(b"unread")
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, logger="kata_shim.io.stdio"):
        await asyncio.wait_for(host.close(), 5)
    assert 0.25 <= loop.time() - began < 2
    assert "6 byte(s) of output nobody read" in caplog.text


async def test_aborted_sink_closes_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    host = await _open_stdout(fifo, stall_timeout=5.0)
    assert host.stdout is not None
    await host.stdout.write(b"dropped")
    host.stdout.abort()  # SIGKILL / sandbox death: destructive teardown
    await asyncio.wait_for(host.close(), 1)


async def test_exec_exit_is_reported_only_after_a_late_reader_took_its_output() -> None:
    """The whole path through the task service: the exit waits for the client's reader."""
    async with harness() as h:
        h.program("forever", runtime=None)
        h.program("echo", stdout=b"x389\n")
        await h.create("c1", ["forever"])
        await h.start("c1")
        out = h.fifo("e389-stdout")
        await h.exec("c1", "e389", ["echo"], stdout=out)
        waiting = asyncio.create_task(h.wait("c1", "e389"))
        await h.start("c1", "e389")
        agent = h.agent("c1")
        await until(lambda: "WaitProcess returned" in agent.names())  # drained and reaped
        await asyncio.sleep(0.2)  # the client's reader is starved a while longer
        reported_early = waiting.done() or ("c1", "e389", 0) in h.publisher.exits()
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert await read_to_eof(reader) == b"x389\n"
        finally:
            os.close(reader)
        assert not reported_early, "exit reported before the client could read the output"
        assert (await asyncio.wait_for(waiting, 5)).exit_status == 0
        await h.kill("c1", 9)
