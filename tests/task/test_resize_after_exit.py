"""ResizePty racing the exit of a tty exec (ctr resizes right after Start): never an error.

Seen under load (tests/reliability/test_stress.py): `ctr task exec -t … echo` printed
"ERRO resize pty … cannot resize process in state stopped" or "… not found" (the agent had
already reaped the process while its exit was being reported) after the process's output.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from kata_shim import errors
from kata_shim.proto import task_pb2
from tests.task.harness import CTX, harness

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


def _resize(exec_id: str) -> task_pb2.ResizePtyRequest:
    return task_pb2.ResizePtyRequest(id="c1", exec_id=exec_id, width=80, height=24)


async def test_resize_after_the_exit_is_a_no_op() -> None:
    async with harness() as h:
        h.program("forever", runtime=None)
        h.program("echo", stdout=b"tok\r\n")
        await h.create("c1", ["forever"], terminal=True)
        await h.start("c1")
        await h.exec("c1", "e1", ["echo"], terminal=True)
        await h.start("c1", "e1")
        assert (await h.wait("c1", "e1")).exit_status == 0
        await h.service.ResizePty(CTX, _resize("e1"))
        await h.kill("c1", 9)


async def test_resize_while_the_reaped_exit_is_being_reported_is_a_no_op() -> None:
    async with harness() as h:
        h.program("forever", runtime=None)
        h.program("echo", stdout=b"tok\r\n")
        await h.create("c1", ["forever"], terminal=True)
        await h.start("c1")
        out = h.fifo("e1-out")
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)  # present, not reading yet
        try:
            await h.exec("c1", "e1", ["echo"], terminal=True, stdout=out)
            await h.start("c1", "e1")
            agent = h.agent("c1")
            async with asyncio.timeout(5):
                while "WaitProcess returned" not in agent.names():
                    await asyncio.sleep(0.005)
            agent.fail["TtyWinResize"] = errors.NotFound("gone")
            await h.service.ResizePty(CTX, _resize("e1"))  # agent: NotFound; we: fine
            assert os.read(reader, 100) == b"tok\r\n"
        finally:
            os.close(reader)
        assert (await h.wait("c1", "e1")).exit_status == 0
        await h.kill("c1", 9)
