"""Pumps between a process's host stdio and its streams in the guest agent.

Rules (contract §5.4, docs/exits.md):
* stdout/stderr: ReadStdout/ReadStderr until empty data (EOF) or an RPC error.
  Agent output is read even when the client gave no stdout (and dropped), so a
  process never blocks on a full pipe. The caller runs WaitProcess only after
  `drained()`: the agent drops a process's streams at WaitProcess.
* stdin: host fifo → WriteStdin (partial writes resent). CloseStdin is sent
  once, only after every byte read was forwarded, and only at host EOF, on
  CloseIO, or at start when there is no stdin (so the guest sees EOF).
* stdout EOF ends the stdin pump (the process is gone).
* Bounded: sinks give up on a stalled reader; `abort(grace, hard)` (SIGKILL,
  sandbox death, shutdown) discards output after `grace` and abandons the
  agent reads `hard` seconds later. `close()` (after WaitProcess) closes the
  host ends so clients see EOF — a FIFO only once the client took what is
  buffered in it (bounded; not after `abort`), so the exit never overtakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select

from kata_shim.agent.client import AgentClient
from kata_shim.errors import ShimError, Unavailable
from kata_shim.io.copy import read_some
from kata_shim.io.stdio import HostStdio, Sink, wait_event, wake

__all__ = ["CHUNK", "Pumps"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes asked per ReadStdout/ReadStderr and sent per WriteStdin


def _readable_now(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class Pumps:
    """The stdio pumps of one process. Tasks are owned here; `close()` ends them."""

    def __init__(
        self,
        agent: AgentClient,
        container_id: str,
        agent_exec_id: str,
        host: HostStdio,
        *,
        terminal: bool,
    ) -> None:
        self._agent = agent
        self._ids = (container_id, agent_exec_id)
        self._name = agent_exec_id if agent_exec_id == container_id else f"{container_id}/exec"
        self.host = host
        self._terminal = terminal
        self._outputs: list[asyncio.Task[None]] = []
        self._stdin_task: asyncio.Task[None] | None = None
        self._abort_task: asyncio.Task[None] | None = None
        self._close_requested = asyncio.Event()  # CloseIO(stdin) asked
        self._stdin_closed = False  # CloseStdin sent (event loop only)
        self._aborting = False  # abort() was called: close() drops buffered output

    def start(self) -> None:
        """Start the pump tasks; with no host stdin, close the guest's stdin right away.

        Synchronous on purpose: no cancellation point between the agent call that
        created the process and its monitor being set up.
        """
        loop = asyncio.get_running_loop()
        self._outputs.append(loop.create_task(self._output("stdout")))
        if not self._terminal:
            self._outputs.append(loop.create_task(self._output("stderr")))
        if self.host.stdin_fd is not None:
            self._stdin_task = loop.create_task(self._stdin(self.host.stdin_fd))
        else:
            self._stdin_task = loop.create_task(self._send_close_stdin())

    # output -----------------------------------------------------------------------
    async def _output(self, stream: str) -> None:
        sink: Sink | None = getattr(self.host, stream)
        stderr = stream == "stderr"
        try:
            # each chunk is a view of the reply frame (a zero-copy field); no deadline
            while data := await self._agent.read_stream(*self._ids, CHUNK, stderr=stderr):
                if sink is not None:
                    await sink.write(data)
        except ShimError as exc:
            log.debug("%s: %s pump ended: %s", self._name, stream, exc)
        finally:
            if stream == "stdout" and self._stdin_task is not None:
                self._stdin_task.cancel()

    async def drained(self) -> None:
        """Until every output stream reached EOF (or was abandoned after `abort`)."""
        if self._outputs:
            await asyncio.wait(self._outputs)

    def abort(self, grace: float, hard: float) -> None:
        """Destructive teardown: bounded drain, then discard, then abandon. Idempotent.

        Also means `close()` does not wait for the client to take what is still buffered.
        """
        self._aborting = True
        if self._abort_task is None and not all(t.done() for t in self._outputs):
            self._abort_task = asyncio.get_running_loop().create_task(self._abort(grace, hard))

    async def _abort(self, grace: float, hard: float) -> None:
        if grace > 0:
            _, pending = await asyncio.wait(self._outputs, timeout=grace)
            if not pending:
                return
        for sink in (self.host.stdout, self.host.stderr):
            if sink is not None:
                sink.abort()
        _, pending = await asyncio.wait(self._outputs, timeout=hard)
        if pending:
            log.warning("%s: no output EOF %gs after abort; abandoning", self._name, hard)
            for task in pending:
                task.cancel()

    # stdin ------------------------------------------------------------------------
    async def _stdin(self, fd: int) -> None:
        try:
            while data := await self._read_stdin(fd):
                await self._forward(data)
        except (ShimError, OSError) as exc:
            log.debug("%s: stdin pump ended: %s", self._name, exc)
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
            self.host.stdin_fd = None
        await self._send_close_stdin()

    async def _read_stdin(self, fd: int) -> bytes:
        """Next chunk; b"" at EOF, or once CloseIO asked and nothing more is readable."""
        while True:
            # Read only when poll says so: a fifo that never had a writer reads as EOF.
            if _readable_now(fd):
                try:
                    data: bytes = read_some(fd, CHUNK)
                    return data
                except BlockingIOError:
                    pass
            if self._close_requested.is_set():
                return b""
            await self._readable_or_close(fd)

    async def _readable_or_close(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, lambda: wake(ready))
        closing = loop.create_task(wait_event(self._close_requested))
        try:
            await asyncio.wait({ready, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(fd)
            closing.cancel()

    async def _forward(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            taken = await self._agent.write_stdin(*self._ids, bytes(view))  # waits for the reader
            if taken == 0:
                raise Unavailable("agent accepted no stdin bytes")
            view = view[taken:]

    async def _send_close_stdin(self) -> None:
        if self._stdin_closed:
            return
        self._stdin_closed = True
        try:
            await self._agent.close_stdin(*self._ids)
        except ShimError as exc:
            log.debug("%s: CloseStdin: %s", self._name, exc)

    def request_stdin_close(self) -> None:
        """CloseIO arrived before the pumps existed: close stdin once what is there is sent."""
        self._close_requested.set()

    async def close_stdin(self, timeout: float) -> None:
        """CloseIO(stdin): forward what was written, then CloseStdin. Waits at most `timeout`."""
        self._close_requested.set()
        task = self._stdin_task
        if task is None:
            await self._send_close_stdin()
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            log.warning("%s: stdin still forwarding after %gs; closing later", self._name, timeout)

    # end ----------------------------------------------------------------------------
    async def close(self) -> None:
        """After WaitProcess: stop the pumps and close the host ends (clients see EOF)."""
        tasks = [t for t in (*self._outputs, self._stdin_task, self._abort_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._aborting:
            for sink in (self.host.stdout, self.host.stderr):
                if sink is not None:
                    sink.abort()
        await self.host.close()
