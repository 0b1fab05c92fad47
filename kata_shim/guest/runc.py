"""The runc command line, as the agent drives it.

One `Runc` per agent: a private runc root under the agent's state dir, runc's
own log in JSON next to it (so runc's errors never mix into container stdio),
and every invocation through spawn.run (exit codes via the reaper). Failures
raise ShimError with runc's last logged error message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kata_shim.errors import FailedPrecondition, NotFound, ShimError
from kata_shim.guest import spawn
from kata_shim.guest.reaper import Reaper

__all__ = ["Runc", "RuncError"]

log = logging.getLogger(__name__)


class RuncError(ShimError):
    """runc exited non-zero."""


def root_is_initramfs(mountinfo: str | None = None) -> bool:
    """True when / is the initramfs (`rootfs`), where pivot_root(2) cannot work."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) > 4 and fields[4] == "/":
            return right.split()[:1] == ["rootfs"]
    return False


class Runc:
    def __init__(self, root: Path, reaper: Reaper, binary: str = "runc") -> None:
        self.root = root
        self.reaper = reaper
        self.binary = binary
        self.log_path = root / "runc.log"
        # in a guest booted from an initramfs, runc must chroot instead of pivot_root
        self.no_pivot = root_is_initramfs()
        root.mkdir(parents=True, exist_ok=True)

    def _argv(self, *args: str) -> list[str]:
        return [
            self.binary,
            "--root",
            str(self.root),
            "--log",
            str(self.log_path),
            "--log-format",
            "json",
            *args,
        ]

    def _last_error(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-20:]
        except FileNotFoundError:
            return ""
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("level") in ("error", "fatal"):
                return str(entry.get("msg", ""))
        return ""

    async def _call(
        self,
        *args: str,
        fds: Mapping[int, int] | None = None,
        timeout: float = 60.0,
        capture: bool = False,
    ) -> bytes:
        code, output = await spawn.run(
            self.reaper, self._argv(*args), fds=fds, timeout=timeout, capture=capture
        )
        if code != 0:
            message = self._last_error() or f"exit status {code}"
            error = f"runc {args[0]} failed: {message}"
            if "does not exist" in message or "not exist" in message:
                raise NotFound(error)
            if "not running" in message or "not paused" in message or "stopped" in message:
                raise FailedPrecondition(error)
            raise RuncError(error)
        return output

    async def create(
        self,
        cid: str,
        bundle: Path,
        pid_file: Path,
        stdio: Mapping[int, int],
        console_socket: Path | None = None,
    ) -> None:
        args = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if self.no_pivot:
            args.append("--no-pivot")
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        await self._call(*args, cid, fds=stdio)

    async def start(self, cid: str) -> None:
        await self._call("start", cid)

    async def exec(
        self,
        cid: str,
        process_json: Path,
        pid_file: Path,
        stdio: Mapping[int, int],
        console_socket: Path | None = None,
    ) -> None:
        args = ["exec", "--detach", "--process", str(process_json), "--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        await self._call(*args, cid, fds=stdio)

    async def kill(self, cid: str, signal: int, *, all_processes: bool = False) -> None:
        await self._call("kill", *(["--all"] if all_processes else []), cid, str(signal))

    async def pause(self, cid: str) -> None:
        await self._call("pause", cid)

    async def resume(self, cid: str) -> None:
        await self._call("resume", cid)

    async def update(self, cid: str, resources_json: Path) -> None:
        await self._call("update", "--resources", str(resources_json), cid)

    async def delete(self, cid: str) -> None:
        try:
            await self._call("delete", "--force", cid)
        except NotFound:
            log.debug("runc delete %s: already gone", cid)

    async def state(self, cid: str) -> dict[str, Any]:
        output = await self._call("state", cid, capture=True)
        state: dict[str, Any] = json.loads(output)
        return state
