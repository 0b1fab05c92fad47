"""The pod's host cgroup: cgroupsPath → pod/sandbox paths (cgroupfs and systemd forms), and
create/join/remove on scratch directories standing in for the hierarchies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kata_shim.errors import InvalidArgument
from kata_shim.sandbox.podcgroup import (
    RECORD,
    HostPaths,
    PodCgroup,
    container_path,
    expand_slice,
    host_paths,
    remove_recorded,
    spec_cgroups_path,
)

SID = "3f2a9c"


@pytest.mark.parametrize(
    ("cgroups_path", "pod", "sandbox"),
    [
        # containerd 1.6 CRI: filepath.Join(cgroup_parent, id); stats load cgroup_parent
        (
            "/kubepods/burstable/pod12/" + SID,
            "/kubepods/burstable/pod12",
            "/kubepods/burstable/pod12/kata_" + SID,
        ),
        ("/default/" + SID, "/default", "/default/kata_" + SID),  # ctr run
        ("kubepods//pod12/" + SID, "/kubepods/pod12", "/kubepods/pod12/kata_" + SID),
        ("/" + SID, "/", "/kata_" + SID),
        # systemd: <base of cgroup_parent>:cri-containerd:<id>, runc's scope name
        (
            f"kubepods-besteffort-pod12.slice:cri-containerd:{SID}",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice"
            f"/cri-containerd-{SID}.scope",
        ),
        (f"system.slice:docker:{SID}", "/system.slice", f"/system.slice/docker-{SID}.scope"),
        (f":cri-containerd:{SID}", "/", f"/cri-containerd-{SID}.scope"),
        ("a-b.slice:x:c.slice", "/a.slice/a-b.slice", "/a.slice/a-b.slice/c.slice"),
    ],
)
def test_host_paths(cgroups_path: str, pod: str, sandbox: str) -> None:
    assert host_paths(cgroups_path, SID) == HostPaths(pod, sandbox)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "no linux.cgroupsPath"),
        ("/", "root cgroup"),
        ("/kubepods/../etc", "'..'"),
        ("a.slice:b", "slice:prefix:name"),
        ("a.slice:b:", "slice:prefix:name"),
        ("a:b:c", "not a systemd slice"),
        ("a--b.slice:p:n", "not a systemd slice"),
        ("-a.slice:p:n", "not a systemd slice"),
        ("a/b.slice:p:n", "not a systemd slice"),
    ],
)
def test_bad_paths_name_the_problem(bad: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says.replace(".", r"\.")):
        host_paths(bad, SID)


def test_expand_slice() -> None:
    assert expand_slice("-.slice") == "/"
    assert expand_slice("kubepods.slice") == "/kubepods.slice"
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"


@pytest.mark.parametrize(
    ("given", "host"),
    [
        ("/kubepods/burstable/pod12/c1", "/kubepods/burstable/pod12/c1"),  # as runc uses it
        ("/a//b/", "/a/b"),
        (
            "kubepods-besteffort-pod12.slice:cri-containerd:c1",
            ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/c1"),
        ),
        ("", ""),  # none: the agent's default
        ("c1", ""),  # relative (CRI without a cgroup_parent): the agent's default
    ],
)
def test_container_path_is_inside_the_pod_cgroup(given: str, host: str) -> None:
    assert container_path(given) == host
    if host:  # the same pod cgroup as the sandbox's, never the sandbox's own
        sandbox = host_paths(given.replace(":c1", ":" + SID).replace("/c1", "/" + SID), SID)
        assert host.rsplit("/", 1)[0] == sandbox.pod != host
        assert sandbox.sandbox != host.replace("/c1", "/" + SID)


@pytest.mark.parametrize("bad", ["/a/../b", "/", "s.slice:p", "s.slice:p:a/b", "bad:p:c1"])
def test_bad_container_paths_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="cgroupsPath"):
        container_path(bad)


def test_spec_cgroups_path() -> None:
    assert spec_cgroups_path({"linux": {"cgroupsPath": "/p/x"}}) == "/p/x"
    assert spec_cgroups_path({"linux": {}}) == ""
    assert spec_cgroups_path({}) == ""


def _roots(tmp_path: Path) -> list[Path]:
    roots = [tmp_path / "memory", tmp_path / "cpuset"]
    for root in roots:
        root.mkdir()
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    return roots


def _fake_kernel_files(directory: Path) -> None:
    """What the cgroupfs kernel would do on mkdir (cpuset files, empty) and rmdir."""
    for path in sorted(directory.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file():
            path.unlink()


def test_create_join_remove_only_what_it_made(tmp_path: Path) -> None:
    roots = _roots(tmp_path)
    (roots[0] / "kubepods").mkdir()  # exists already (kubelet's): never removed
    cgroup = PodCgroup(host_paths(f"/kubepods/pod1/{SID}", SID), roots=roots)
    cgroup.create()
    assert (roots[0] / "kubepods/pod1" / f"kata_{SID}").is_dir()
    assert (roots[1] / "kubepods/pod1" / f"kata_{SID}").is_dir()
    cgroup.join(4242)
    for root in roots:
        assert (root / "kubepods/pod1" / f"kata_{SID}" / "cgroup.procs").read_text() == "4242"

    cgroup.record(tmp_path)
    recorded = json.loads((tmp_path / RECORD).read_text())
    assert recorded["sandbox"] == f"/kubepods/pod1/kata_{SID}"
    assert len(recorded["created"]) == 5  # memory: pod1, kata_; cpuset: kubepods, pod1, kata_

    for root in roots:
        _fake_kernel_files(root / "kubepods")
    assert cgroup.remove_now() == []
    assert (roots[0] / "kubepods").is_dir() and not (roots[0] / "kubepods/pod1").exists()
    assert not (roots[1] / "kubepods").exists()


def test_new_cpuset_cgroups_get_the_parents_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = _roots(tmp_path)
    cgroup = PodCgroup(host_paths(f"/pod1/{SID}", SID), roots=roots[1:])
    original_mkdir = Path.mkdir

    def kernel_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        original_mkdir(self)  # the kernel makes a new cpuset cgroup with empty cpus/mems
        (self / "cpuset.cpus").write_text("")
        (self / "cpuset.mems").write_text("")

    monkeypatch.setattr(Path, "mkdir", kernel_mkdir)
    cgroup.create()
    monkeypatch.undo()
    for directory in (roots[1] / "pod1", roots[1] / "pod1" / f"kata_{SID}"):
        assert (directory / "cpuset.cpus").read_text().strip() == "0-1"
        assert (directory / "cpuset.mems").read_text().strip() == "0"


def test_remove_recorded_after_a_crash(tmp_path: Path) -> None:
    assert remove_recorded(tmp_path) == []  # nothing recorded: nothing to do
    outside = tmp_path / "not-a-cgroup"
    outside.mkdir()
    (tmp_path / RECORD).write_text(json.dumps({"created": [str(outside)]}))
    assert remove_recorded(tmp_path) == []
    assert outside.is_dir()  # only paths below /sys/fs/cgroup are ever removed
