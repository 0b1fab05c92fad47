"""kata_shim/deps.py: one table behind setup.py, the RPM's Requires and the running interpreter."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kata_shim import deps

REPO = Path(__file__).resolve().parents[1]


def test_version_tuple() -> None:
    assert deps.version_tuple("4.21.12") == (4, 21, 12)
    assert deps.version_tuple("0.17.0+ds1") == (0, 17, 0)
    assert deps.version_tuple("6.33.6") > deps.version_tuple("4.21")
    assert deps.version_tuple("0.0.5") == (0, 0, 5)
    assert deps.version_tuple("1.0rc1") == (1, 0)


def test_setup_requires_the_table() -> None:
    assert deps.install_requires() == [
        "protobuf>=4.21",
        "uvloop>=0.17",
        "cffi>=1.15",
        "prometheus_client>=0.16",
        "pyroute2>=0.7.2",
    ]
    assert 'install_requires=DEPS["install_requires"]()' in (REPO / "setup.py").read_text()


def test_rpm_requires_match_the_table() -> None:
    spec = (REPO / "packaging/rpm/kata-shim.spec").read_text()
    requires = dict(re.findall(r"^Requires:\s+(python3-\S+)\s+>=\s+(\S+)$", spec, re.M))
    for dep in deps.RUNTIME:
        assert requires.get(dep.rpm) == dep.rpm_minimum, dep
    unversioned = re.findall(r"^Requires:\s+(python3-\S+)\s*$", spec, re.M)
    assert unversioned == [], f"Requires without a minimum version: {unversioned}"


@pytest.mark.parametrize("dep", deps.RUNTIME, ids=lambda d: d.dist)
def test_this_interpreter_meets_the_minimum(dep: deps.Dependency) -> None:
    have = importlib.metadata.version(dep.dist)
    assert deps.version_tuple(have) >= deps.version_tuple(dep.minimum)


def test_check_command_reports_every_library() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kata_shim.deps"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
    for dep in deps.RUNTIME:
        assert re.search(
            rf"^ok {re.escape(dep.dist)} \S+ \(minimum {dep.minimum}\)$", done.stdout, re.M
        )
