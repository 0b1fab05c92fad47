"""The pod's host cgroup around a sandbox's life (sandbox_cgroup_only): the shim enters before
the sandbox starts, the sandbox's pid joins after, and the cgroup goes only after stop and
cleanup, also when boot fails. The cgroup itself is a recorder here (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.sandbox.base import SandboxSpec
from kata_shim.sandbox.podcgroup import HostPaths
from kata_shim.task import pod as pod_module
from kata_shim.task.pod import Pod
from tests.fakes.sandbox import FakeSandbox
from tests.task.harness import FAST

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


def recording_cgroup(events: list[str]) -> type:
    class RecordingCgroup:
        def __init__(self, paths: HostPaths) -> None:
            self.paths = paths

        def create(self) -> None:
            events.append(f"cgroup create {self.paths.sandbox}")

        def enter(self) -> None:
            events.append("cgroup enter")

        def join(self, pid: int) -> None:
            events.append(f"cgroup join {pid > 0}")

        def record(self, state_dir: Path) -> None:
            events.append("cgroup record")

        def leave(self) -> None:
            events.append("cgroup leave")

        async def remove(self) -> list[Path]:
            events.append("cgroup remove")
            return []

    return RecordingCgroup


def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, only: bool) -> FakeSandbox:
    spec = SandboxSpec("sb", tmp_path / "sb", sandbox_cgroup_only=only)
    fake = FakeSandbox(spec)
    monkeypatch.setattr(pod_module, "PodCgroup", recording_cgroup(fake.events))
    return fake


async def test_shim_enters_before_start_and_the_cgroup_goes_after_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = sandbox(tmp_path, monkeypatch, only=True)
    pod = Pod("sb", fake, FAST)
    await pod.boot("host", None, cgroups_path="/kubepods/pod1/sb")
    assert fake.events == [
        "cgroup create /kubepods/pod1/kata_sb",
        "cgroup enter",
        "start",
        "cgroup join True",
        "cgroup record",
    ]
    await pod.teardown()
    assert fake.events[-5:] == ["stop", "stopped", "cleanup", "cgroup leave", "cgroup remove"]
    await fake.agent.shutdown()


async def test_a_failed_boot_removes_the_cgroup_after_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = sandbox(tmp_path, monkeypatch, only=True)
    fake.fail_start = errors.Unavailable("no VM today")
    pod = Pod("sb", fake, FAST)
    with pytest.raises(errors.Unavailable):
        await pod.boot("host", None, cgroups_path="kubepods.slice:cri-containerd:sb")
    assert fake.events[0] == "cgroup create /kubepods.slice/cri-containerd-sb.scope"
    assert fake.events[-3:] == ["cleanup", "cgroup leave", "cgroup remove"]
    assert fake.events.index("start") < fake.events.index("cgroup leave")


async def test_no_cgroup_unless_configured_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for only, path in ((False, "/kubepods/pod1/sb"), (True, "")):
        fake = sandbox(tmp_path / str(only), monkeypatch, only=only)
        pod = Pod("sb", fake, FAST)
        await pod.boot("host", None, cgroups_path=path)
        await pod.teardown()
        assert not [e for e in fake.events if e.startswith("cgroup")], fake.events
        await fake.agent.shutdown()


async def test_a_bad_cgroups_path_fails_boot_before_the_sandbox_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = sandbox(tmp_path, monkeypatch, only=True)
    pod = Pod("sb", fake, FAST)
    with pytest.raises(errors.InvalidArgument, match=r"must not contain '\.' or '\.\.'"):
        await pod.boot("host", None, cgroups_path="/kubepods/../sb")
    assert "start" not in fake.events
