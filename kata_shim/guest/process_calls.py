"""The agent's calls on one process of a container: exec, signal, wait, stdin.

Owns ExecProcess (`runc exec` under the container's lock, RUNNING only),
SignalProcess (with the PID-1 SIGTERM → SIGKILL upgrade and the
"kill every process" form), WaitProcess (which forgets a waited exec) and
WriteStdin/CloseStdin. Processes are found in guest.containers.ContainerTable.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from kata_shim.errors import AlreadyExists, FailedPrecondition, NotFound
from kata_shim.guest import bundle
from kata_shim.guest.containers import ContainerTable
from kata_shim.guest.processes import GuestProcess, Starter, launch, write_json
from kata_shim.guest.states import Op

__all__ = ["ProcessCalls", "upgrade_sigterm"]


def _status_field(pid: int, name: str) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def upgrade_sigterm(pid: int) -> bool:
    """True for a PID 1 of its namespace without a SIGTERM handler (it would ignore it)."""
    nspid = _status_field(pid, "NSpid").split()
    caught = int(_status_field(pid, "SigCgt") or "0", 16)
    return bool(nspid) and nspid[-1] == "1" and not caught & (1 << (signal.SIGTERM - 1))


class ProcessCalls:
    """Process-level RPCs on the containers of `table`."""

    def __init__(self, table: ContainerTable) -> None:
        self.table = table

    async def exec(self, cid: str, exec_id: str, config: dict[str, Any]) -> GuestProcess:
        """`runc exec -d` a new process `exec_id` in running container `cid`."""
        bundle.validate_id("exec", exec_id)
        container = self.table.get(cid)
        async with container.lock:
            if exec_id == cid or exec_id in container.execs:
                raise AlreadyExists(f"exec {exec_id} of container {cid} already exists")
            container.check(Op.EXEC)
            spec = write_json(container.bundle / f"exec-{exec_id}.json", config)
            pid_file = container.bundle / f"exec-{exec_id}.pid"
            start: Starter = lambda stdio, console: self.table.runc.exec(  # noqa: E731
                cid, spec, pid_file, stdio, console
            )
            console = self.table.sandbox.console_path(bool(config.get("terminal")))
            try:
                proc = await launch(self.table.reaper, (cid, exec_id), pid_file, console, start)
            finally:
                spec.unlink(missing_ok=True)
                pid_file.unlink(missing_ok=True)
            container.apply(Op.EXEC)
            container.execs[exec_id] = proc
        proc.log.info("started (pid %d)", proc.pid)
        return proc

    async def signal(self, cid: str, exec_id: str, sig: int) -> None:
        """Signal one process; exec id "" with SIGKILL kills every process in the container."""
        container = self.table.get(cid)
        proc = self.table.process(cid, exec_id)
        if not proc.running:
            raise NotFound(f"process {proc.name} already exited")
        if sig == 0:
            return
        if proc is container.init and exec_id == "" and sig == signal.SIGKILL:
            await self.table.runc.kill(cid, sig, all_processes=True)
            return
        if proc is container.init and sig == signal.SIGTERM and upgrade_sigterm(proc.pid):
            proc.log.info("PID 1 has no SIGTERM handler: sending SIGKILL")
            sig = signal.SIGKILL
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)

    async def wait(self, cid: str, exec_id: str) -> int:
        """Block until the process exits; then release it (exec: forget it)."""
        container = self.table.get(cid)
        proc = self.table.process(cid, exec_id)
        code = await proc.wait()
        if proc is not container.init and container.execs.get(proc.exec_id) is proc:
            del container.execs[proc.exec_id]
        return code

    async def write_stdin(self, cid: str, exec_id: str, data: bytes) -> int:
        """Write to stdin; empty data closes it (runtime-rs style)."""
        stdin = self.table.process(cid, exec_id).stdin()
        if stdin is None or stdin.closed:
            raise FailedPrecondition(f"stdin of {exec_id or cid} is closed")
        if not data:
            stdin.close()
            return 0
        return await stdin.write(data)

    def close_stdin(self, cid: str, exec_id: str) -> None:
        stdin = self.table.process(cid, exec_id).stdin()
        if stdin is not None:
            stdin.close()
