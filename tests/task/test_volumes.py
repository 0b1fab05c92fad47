"""Volumes: which spec mounts are shared into a VM, and how the guest spec is rewritten."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kata_shim.errors import InvalidArgument
from kata_shim.sandbox.base import SandboxSpec
from kata_shim.task.spec import agent_spec
from kata_shim.task.volumes import SHM_TMPFS, share_volumes
from tests.fakes.sandbox import GUEST_SHARE, FakeSandbox


def spec_with(mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "process": {"args": ["sh"]}, "root": {"path": "rootfs"},
            "mounts": mounts}  # fmt: skip


MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "rw"]},
    {"destination": "/etc/hosts", "type": "none", "source": "/x/hosts", "options": ["bind", "ro"]},
    {"destination": "/dev/shm", "type": "bind", "source": "/run/sandbox/shm", "options": ["rbind"]},
    {
        "destination": "/sys/fs/cgroup",
        "type": "bind",
        "source": "/sys/fs/cgroup",
        "options": ["bind"],
    },
]


def sandbox(tmp_path: Path, isolated: bool = True) -> FakeSandbox:
    box = FakeSandbox(SandboxSpec("sb", tmp_path / "sb"))
    box.isolated = isolated
    return box


def test_host_binds_are_shared_and_rewritten_system_ones_kept(tmp_path: Path) -> None:
    box = sandbox(tmp_path)
    spec = spec_with(MOUNTS)
    plan = asyncio.run(share_volumes(box, "c1", spec))
    assert box.shared == {"c1/mount-1": Path("/srv/data"), "c1/mount-2": Path("/x/hosts")}
    assert plan[1]["source"] == f"{GUEST_SHARE}/c1/mount-1"
    assert plan[2]["source"] == f"{GUEST_SHARE}/c1/mount-2" and plan[2]["options"] == ["bind", "ro"]
    assert plan[3] == SHM_TMPFS  # the host's shm cannot cross into the VM
    assert 0 not in plan and 4 not in plan
    guest = agent_spec(spec, "/guest/root", plan)
    sources = {m.destination: (m.type, m.source) for m in guest.Mounts}
    assert sources["/data"] == ("bind", f"{GUEST_SHARE}/c1/mount-1")
    assert sources["/dev/shm"] == ("tmpfs", "shm")
    assert sources["/proc"] == ("proc", "proc")
    assert sources["/sys/fs/cgroup"] == ("bind", "/sys/fs/cgroup")
    assert spec["mounts"] == MOUNTS  # the caller's spec is untouched


def test_local_sandbox_shares_nothing(tmp_path: Path) -> None:
    box = sandbox(tmp_path, isolated=False)
    assert asyncio.run(share_volumes(box, "c1", spec_with(MOUNTS))) == {}
    assert box.shared == {}


def test_relative_bind_source_is_refused(tmp_path: Path) -> None:
    bad = [{"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]}]
    with pytest.raises(InvalidArgument, match="not absolute"):
        asyncio.run(share_volumes(sandbox(tmp_path), "c1", spec_with(bad)))
