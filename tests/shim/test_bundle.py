"""Pod-container resolution (CRI, CRI-O, dockershim) and reading the options Any from stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kata_shim.shim.bundle import BundleError, annotations_of, read_options, sandbox_of, spec_of
from kata_shim.task.spec import Role, placement

pytestmark = pytest.mark.timeout(10)

FAMILIES = [
    ("io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id", "sandbox"),
    ("io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID", "sandbox"),
    ("io.kubernetes.docker.type", "io.kubernetes.sandbox.id", "podsandbox"),
]


@pytest.mark.parametrize(("type_key", "id_key", "sandbox_value"), FAMILIES)
def test_pod_container_resolves_to_its_sandbox(
    type_key: str, id_key: str, sandbox_value: str
) -> None:
    where = sandbox_of("c1", {type_key: "container", id_key: "sb1"})
    assert (where.sandbox_id, where.pod_container) == ("sb1", True)


@pytest.mark.parametrize(("type_key", "id_key", "sandbox_value"), FAMILIES)
def test_sandbox_container_is_its_own_sandbox(
    type_key: str, id_key: str, sandbox_value: str
) -> None:
    where = sandbox_of("sb1", {type_key: sandbox_value, id_key: "sb1"})
    assert (where.sandbox_id, where.pod_container) == ("sb1", False)


@pytest.mark.parametrize(("type_key", "id_key", "sandbox_value"), FAMILIES)
def test_agrees_with_the_task_service(type_key: str, id_key: str, sandbox_value: str) -> None:
    """start's stdlib copy must place containers exactly like kata_shim.task.spec.placement."""
    for kind in (sandbox_value, "container"):
        annotations = {type_key: kind, id_key: "sb9"}
        ours = sandbox_of("c9", annotations)
        theirs = placement("c9", annotations)
        assert ours.sandbox_id == theirs.sandbox_id
        assert ours.pod_container == (theirs.role is Role.CONTAINER)


def test_no_annotations_is_a_single_container() -> None:
    where = sandbox_of("solo", {"unrelated": "x"})
    assert (where.sandbox_id, where.pod_container) == ("solo", False)


def test_container_without_sandbox_id_is_an_error() -> None:
    with pytest.raises(BundleError, match=r"without io\.kubernetes\.cri\.sandbox-id"):
        sandbox_of("c1", {"io.kubernetes.cri.container-type": "container"})


def test_spec_and_annotations(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"annotations": {"a": "b"}}))
    assert annotations_of(spec_of(str(tmp_path))) == {"a": "b"}
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(BundleError, match="not a JSON object"):
        spec_of(str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(BundleError, match="cannot read"):
        spec_of(str(tmp_path))


def test_read_options_from_pipe_devnull_and_closed() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"\x0a\x03abc")
    os.close(write_end)
    assert read_options(read_end) == b"\x0a\x03abc"
    os.close(read_end)
    with open(os.devnull, "rb") as null:
        assert read_options(null.fileno()) == b""
    assert read_options(read_end) == b""  # closed fd


def test_read_options_does_not_hang_on_an_open_pipe() -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"partial")
        assert read_options(read_end, timeout=0.2) == b"partial"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_read_options_from_a_real_stdin() -> None:
    code = "import sys; from kata_shim.shim.bundle import read_options; print(read_options(0))"
    result = subprocess.run(
        [sys.executable, "-c", code], input=b"\x0a\x01x", capture_output=True, timeout=10
    )
    assert result.stdout.strip() == b"b'\\n\\x01x'"
