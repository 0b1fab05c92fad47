"""`python -m kata_shim.plugin.regen [--check]` on the real tree and on scratch copies.

The real tree is only read; everything that modifies files works on a copy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kata_shim.plugin import regen

REPO = Path(__file__).resolve().parents[2]
PROTO = Path("kata_shim") / "proto"


def test_checked_in_code_is_up_to_date() -> None:
    problems = regen.check()
    assert problems == [], "\n".join(problems) + "\nrun `make proto`"


def test_every_proto_is_generated() -> None:
    names = {p.name for p in (REPO / PROTO).iterdir()}
    for proto in regen.proto_files():
        stem = Path(proto).stem
        assert {f"{stem}_pb2.py", f"{stem}_pb2.pyi"} <= names, proto
    services = {"task", "events_service", "agent", "health"}
    assert {n.removesuffix("_ttrpc.py") for n in names if n.endswith("_ttrpc.py")} == services


def test_generation_is_deterministic(tmp_path: Path) -> None:
    regen.generate_into(tmp_path / "one")
    regen.generate_into(tmp_path / "two")
    one = sorted((tmp_path / "one" / PROTO).iterdir())
    assert len(one) >= 3 * 4
    for path in one:
        assert path.read_bytes() == (tmp_path / "two" / PROTO / path.name).read_bytes(), path.name


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A scratch copy of the package (without build products) to break and repair."""
    target = tmp_path / "repo"
    ignore = shutil.ignore_patterns("*.so", "*.c", "__pycache__")
    shutil.copytree(REPO / "kata_shim", target / "kata_shim", ignore=ignore)
    return target


def _run_check(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kata_shim.plugin.regen", "--check"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={
            "PYTHONPATH": str(repo),
            "PATH": "/usr/bin:/bin",
            # the copy has no generator virtualenv of its own
            "KATA_SHIM_PROTOC_PYTHON": str(regen.GENERATOR_VENV / "bin" / "python"),
        },
    )


def test_check_passes_on_an_untouched_copy(copy: Path) -> None:
    result = _run_check(copy)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_check_fails_on_a_tampered_file(copy: Path) -> None:
    target = copy / PROTO / "task_ttrpc.py"
    target.write_text(target.read_text().replace("class TaskBase(", "class TaskBaseX(", 1))
    result = _run_check(copy)
    assert result.returncode == 1
    assert "--- checked-in/task_ttrpc.py" in result.stderr
    assert "+++ regenerated/task_ttrpc.py" in result.stderr
    assert "-class TaskBaseX(abc.ABC)" in result.stderr
    assert "make proto" in result.stderr


def test_check_fails_on_a_missing_or_stale_file(copy: Path) -> None:
    (copy / PROTO / "mount_pb2.pyi").unlink()
    (copy / PROTO / "gone_pb2.py").write_text("# left over from a deleted gone.proto\n")
    result = _run_check(copy)
    assert result.returncode == 1
    assert "missing: kata_shim/proto/mount_pb2.pyi" in result.stderr
    assert "stale, no .proto generates it: kata_shim/proto/gone_pb2.py" in result.stderr


def test_check_fails_when_a_proto_changes(copy: Path) -> None:
    proto = copy / PROTO / "mount.proto"
    proto.write_text(proto.read_text().replace("repeated string options = 4;", ""))
    problems = regen.check(copy)
    assert {p.splitlines()[0] for p in problems} == {
        "--- checked-in/mount_pb2.py",
        "--- checked-in/mount_pb2.pyi",
    }


def test_regenerate_repairs_a_copy(copy: Path) -> None:
    (copy / PROTO / "health_ttrpc.py").write_text("broken\n")
    (copy / PROTO / "types_pb2.pyi").unlink()
    (copy / PROTO / "gone_pb2.py").write_text("stale\n")
    changed = regen.regenerate(copy)
    assert sorted(changed) == [
        "created types_pb2.pyi",
        "deleted gone_pb2.py",
        "updated health_ttrpc.py",
    ]
    assert regen.check(copy) == []
    assert regen.regenerate(copy) == []


def test_a_protoc_error_changes_nothing(copy: Path) -> None:
    (copy / PROTO / "broken.proto").write_text('syntax = "proto3";\nmessage {\n')
    before = {p.name: p.read_bytes() for p in (copy / PROTO).iterdir() if p.is_file()}
    with pytest.raises(RuntimeError, match="protoc failed"):
        regen.regenerate(copy)
    after = {p.name: p.read_bytes() for p in (copy / PROTO).iterdir() if p.is_file()}
    assert after == before
