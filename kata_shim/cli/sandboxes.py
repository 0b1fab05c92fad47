"""`kata-shim sandboxes`: the sandboxes under the shim state dir and whether they live.

Every directory `<[runtime] state_dir>/<sandbox-id>/` (default
/run/kata-shim) is a sandbox. Its shim pid comes from `<dir>/shim.pid` when
the shim wrote one, else from the process table: the serving shim's command
line is `containerd-shim-kata-v2 -namespace <ns> -id <sandbox-id> ...`.
running = that pid is alive; stale = a directory no live shim owns (left by
a crash; `containerd-shim-kata-v2 delete` or a reboot removes it). NETWORK: the
pod interfaces a QEMU sandbox carried in (name=addresses, from `<dir>/network.json`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kata_shim.shim.paths import NETWORK_RECORD, PID_FILE, read_text

__all__ = ["SandboxEntry", "list_sandboxes", "render_json", "render_table", "shim_pids"]

SHIM_NAMES = ("containerd-shim-kata-v2", "containerd-shim-kata-v2-py", "kata_shim.shim.main")


@dataclass(frozen=True, slots=True)
class SandboxEntry:
    id: str
    state: str  # running or stale
    pid: int  # 0 when unknown
    namespace: str
    backend: str
    path: str
    #: the pod network interfaces carried into the VM: name, mac, tap, addresses
    interfaces: list[dict[str, Any]] = field(default_factory=list)


def _cmdline(proc: Path) -> list[str]:
    try:
        raw = (proc / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _flag(argv: list[str], name: str) -> str:
    for index, arg in enumerate(argv[:-1]):
        if arg in (f"-{name}", f"--{name}"):
            return argv[index + 1]
    return ""


def _is_serving_shim(argv: list[str]) -> bool:
    head = argv[:3]  # `python3 /usr/bin/containerd-shim-kata-v2 ...` for a script
    named = any(os.path.basename(arg) in SHIM_NAMES for arg in head)
    return named and not {"start", "delete"} & set(argv)


def shim_pids(proc_root: Path = Path("/proc")) -> dict[str, tuple[int, str]]:
    """Task id → (pid, namespace) of every serving kata shim."""
    found: dict[str, tuple[int, str]] = {}
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(entry)
        if _is_serving_shim(argv) and (task_id := _flag(argv, "id")):
            found.setdefault(task_id, (int(entry.name), _flag(argv, "namespace")))
    return found


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _backend(directory: Path) -> str:
    if (directory / "qmp.sock").exists():
        return "qemu"
    if (directory / "vm").is_dir():
        return "libvirt"
    if (directory / "agent").exists() or (directory / "agent.log").exists():
        return "local"
    return "-"


def _interfaces(directory: Path) -> list[dict[str, Any]]:
    """What the sandbox recorded of its pod network (sandbox/qemu/podnet.py)."""
    try:
        saved = json.loads((directory / NETWORK_RECORD).read_text())
    except (OSError, ValueError):
        return []
    found = saved.get("interfaces") if isinstance(saved, dict) else None
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


def _network_cell(interfaces: list[dict[str, Any]]) -> str:
    cells = [f"{i.get('name')}={','.join(i.get('addresses') or [])}" for i in interfaces]
    return " ".join(cells) or "-"


def _entry(directory: Path, shims: dict[str, tuple[int, str]]) -> SandboxEntry:
    pid_text = read_text(str(directory / PID_FILE)) or ""
    pid, namespace = shims.get(directory.name, (0, ""))
    if pid_text.isdigit():
        pid = int(pid_text)
    state = "running" if _alive(pid) else "stale"
    return SandboxEntry(
        directory.name,
        state,
        pid,
        namespace or "-",
        _backend(directory),
        str(directory),
        _interfaces(directory),
    )


def list_sandboxes(state_dir: Path, proc_root: Path = Path("/proc")) -> list[SandboxEntry]:
    if not state_dir.is_dir():
        return []
    shims = shim_pids(proc_root)
    directories = sorted(p for p in state_dir.iterdir() if p.is_dir())
    return [_entry(directory, shims) for directory in directories]


def render_table(entries: Iterable[SandboxEntry]) -> str:
    rows = [("SANDBOX", "STATE", "PID", "NAMESPACE", "BACKEND", "NETWORK")]
    rows += [
        (e.id, e.state, str(e.pid or "-"), e.namespace, e.backend, _network_cell(e.interfaces))
        for e in entries
    ]
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_json(entries: Iterable[SandboxEntry]) -> str:
    return json.dumps([asdict(entry) for entry in entries], indent=2) + "\n"
