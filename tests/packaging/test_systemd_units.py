"""packaging/systemd: the monitor unit and the debug drop-ins pass `systemd-analyze verify`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kata_shim.shim.logging_setup import DEBUG_ENV
from tests.packaging import systemd_root

pytestmark = pytest.mark.timeout(120)

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
MONITOR = SYSTEMD_DIR / "kata-shim-monitor.service"
DROPINS = {
    "containerd.service": SYSTEMD_DIR / "containerd.service.d" / "kata-shim-debug.conf",
    "isulad.service": SYSTEMD_DIR / "isulad.service.d" / "kata-shim-debug.conf",
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    assert shutil.which("systemd-analyze"), "scripts/dev.sh installs systemd"
    units = systemd_root.prepare(tmp_path)
    shutil.copy2(MONITOR, units / MONITOR.name)
    systemd_root.stub(tmp_path, "/usr/bin/kata-shim-monitor")
    return tmp_path


def test_monitor_unit_verifies_cleanly(root: Path) -> None:
    done = systemd_root.verify(root, MONITOR.name)
    assert (done.returncode, done.stdout) == (0, "")


def test_monitor_unit_is_hardened(root: Path) -> None:
    assert systemd_root.exposure(root, MONITOR.name) < 3.0


def test_monitor_binary_must_exist(root: Path) -> None:
    (root / "usr/bin/kata-shim-monitor").unlink()
    done = systemd_root.verify(root, MONITOR.name)
    assert "kata-shim-monitor is not executable" in done.stdout


@pytest.mark.parametrize("service", sorted(DROPINS))
def test_debug_dropin_verifies_with_its_engine(root: Path, service: str) -> None:
    systemd_root.install_dropin(root, service, DROPINS[service])
    done = systemd_root.verify(root, service)
    assert (done.returncode, done.stdout) == (0, "")


def test_a_broken_dropin_is_reported(root: Path) -> None:
    dropin = systemd_root.install_dropin(root, "containerd.service", DROPINS["containerd.service"])
    dropin.write_text(dropin.read_text() + "NoSuchKey=1\n")
    assert "Unknown key 'NoSuchKey'" in systemd_root.verify(root, "containerd.service").stdout


@pytest.mark.parametrize("service", sorted(DROPINS))
def test_dropin_sets_the_variable_the_shim_reads(service: str) -> None:
    lines = DROPINS[service].read_text().splitlines()
    assert f"Environment={DEBUG_ENV}=1" in lines
    assert "[Service]" in lines
