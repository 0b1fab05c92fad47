"""`make rpm`: build the SRPM and binary RPM, rpmlint clean, install into a scratch root.

The binary RPM is installed with `rpm --root <tmp> --dbpath /var/lib/rpm -i
--nodeps --noscripts` (the db lands in <tmp>/var/lib/rpm; scriptlets would run
chrooted into a root without /bin/sh, and %systemd_post has nothing to do
there). The installed console scripts run with Debian's /usr/bin/python3 (their
shebang interpreter) and PYTHONPATH = the scratch root's sitearch, because
/usr/lib64/python3.11/site-packages is the openEuler layout that Debian's
python does not search.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kata_shim import deps
from tests.packaging import systemd_root

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
SITEARCH = "usr/lib64/python3.11/site-packages"
BINARIES = [
    "containerd-shim-kata-v2",
    "containerd-shim-kata-v2-py",
    "kata-shim",
    "kata-agent-py",
    "kata-shim-monitor",
]
CONFIG = "usr/share/defaults/kata-containers/configuration.toml"


class Built:
    def __init__(self, output: str, srpm: Path, rpm: Path) -> None:
        self.output, self.srpm, self.rpm = output, srpm, rpm


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    topdir = tmp_path_factory.mktemp("rpmbuild")
    env = {**os.environ, "RPM_TOPDIR": str(topdir), "VENV": str(REPO / ".venv")}
    done = subprocess.run(
        ["make", "-s", "rpm"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    srpm, rpm = (Path(line) for line in done.stdout.strip().splitlines()[-2:])
    return Built(output, srpm, rpm)


@pytest.fixture(scope="module")
def root(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    rpm = [str(built.rpm)]
    subprocess.run(
        ["rpm", f"--root={root}", "--dbpath=/var/lib/rpm", "-i", "--nodeps", "--noscripts", *rpm],
        check=True,
        capture_output=True,
    )
    return root


def test_srpm_and_rpm_are_named_like_openeuler(built: Built) -> None:
    assert built.srpm.name == "kata-shim-0.1.0-1.src.rpm" and built.srpm.exists()
    assert built.rpm.name == "kata-shim-0.1.0-1.x86_64.rpm" and built.rpm.exists()


def test_rpmlint_reports_no_errors(built: Built) -> None:
    summary = re.search(r"checked; (\d+) errors, (\d+) warnings", built.output)
    assert summary, built.output[-2000:]
    assert summary[1] == "0", [line for line in built.output.splitlines() if ": E: " in line]


def test_package_metadata(built: Built) -> None:
    def query(*args: str) -> list[str]:
        return subprocess.run(
            ["rpm", "-qp", *args, str(built.rpm)], capture_output=True, text=True, check=True
        ).stdout.splitlines()

    assert query("--conflicts") == ["kata-containers"]
    requires = query("--requires")
    expected = ["python(abi) = 3.11", "qemu", "runc"]
    expected += [f"{dep.rpm} >= {dep.rpm_minimum}" for dep in deps.RUNTIME]
    for dep in expected:
        assert dep in requires
    scripts = "\n".join(query("--scripts"))
    assert "preset kata-shim-monitor.service" in scripts
    assert "try-restart kata-shim-monitor.service" in scripts
    assert query("--configfiles") == [f"/{CONFIG}"]


def test_installed_files_and_modes(root: Path) -> None:
    listed = subprocess.run(
        ["rpm", f"--root={root}", "--dbpath=/var/lib/rpm", "-ql", "kata-shim"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    expected = [f"/usr/bin/{name}" for name in BINARIES] + [
        f"/{CONFIG}",
        "/var/lib/kata",
        "/usr/lib/systemd/system/kata-shim-monitor.service",
        "/usr/share/kata-shim/systemd/containerd.service.d/kata-shim-debug.conf",
        "/usr/share/kata-shim/systemd/isulad.service.d/kata-shim-debug.conf",
        f"/{SITEARCH}/kata_shim/shim/main.py",
        f"/{SITEARCH}/kata_shim/config/configuration.toml",
        "/usr/share/doc/kata-shim-0.1.0/debugging.md",
    ]
    assert not set(expected) - set(listed)
    assert "/usr/bin/protoc-gen-kata-ttrpc" not in listed
    so = [path for path in listed if path.endswith(".so")]
    assert len(so) == 3 and all(path.startswith(f"/{SITEARCH}/kata_shim/") for path in so)

    def mode(path: str) -> int:
        return stat.S_IMODE((root / path).stat().st_mode)

    for name in BINARIES:
        assert mode(f"usr/bin/{name}") == 0o755
    assert mode(CONFIG) == 0o644
    assert mode("usr/lib/systemd/system/kata-shim-monitor.service") == 0o644
    assert (root / "var/lib/kata").is_dir() and mode("var/lib/kata") == 0o755
    assert (root / CONFIG).read_bytes() == (
        REPO / "kata_shim/config/configuration.toml"
    ).read_bytes()


def _run_installed(root: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(root / SITEARCH)}
    env["KATA_CONF_FILE"] = str(root / CONFIG)
    return subprocess.run(
        ["/usr/bin/python3", str(root / "usr/bin" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_installed_shim_prints_its_version(root: Path) -> None:
    done = _run_installed(root, "containerd-shim-kata-v2-py", "--version")
    assert (done.returncode, done.stdout) == (0, "containerd-shim-kata-v2 (kata-shim) 0.1.0\n")
    done = _run_installed(root, "kata-shim", "--version")
    assert (done.returncode, done.stdout) == (0, "kata-shim 0.1.0\n")
    done = _run_installed(root, "kata-shim-monitor", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: kata-shim-monitor")


def test_installed_scripts_are_plain_wrappers(root: Path) -> None:
    front = (root / "usr/bin/containerd-shim-kata-v2").read_bytes()
    assert front.startswith(b"\x7fELF")  # the C front (csrc/shimfront.c) containerd runs
    text = (root / "usr/bin/containerd-shim-kata-v2-py").read_text()
    assert text.startswith("#!/usr/bin/python3 -s\n")
    assert "from kata_shim.shim.main import main\n" in text and "metadata" not in text


def test_installed_code_and_extensions_come_from_the_root(root: Path) -> None:
    code = (
        "import kata_shim, kata_shim._fastio, kata_shim._native, kata_shim.ttrpc._framing as f;"
        "print(kata_shim.__file__); print(f.__file__)"
    )
    env = {"PYTHONPATH": str(root / SITEARCH)}
    done = subprocess.run(  # cwd: not the source tree, whose kata_shim '' would find first
        ["/usr/bin/python3", "-c", code], env=env, cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert all(line.startswith(str(root / SITEARCH)) for line in done.stdout.splitlines())


START_CONTRACT = Path("/work/shared/checks/start-contract")


def test_installed_shim_serves_on_the_distributions_python_packages(
    root: Path, tmp_path: Path
) -> None:
    """start, Connect, Shutdown and delete of the installed shim, on Debian's python3-* only.

    /usr/bin/python3 -s with the scratch root's sitearch: protobuf, uvloop, cffi and
    prometheus_client come from the distribution (scripts/dev.sh installs them with apt), the
    oldest versions kata_shim/deps.py admits. The shared start-contract check drives the shim.
    """
    env = {"PYTHONPATH": str(root / SITEARCH), "KATA_CONF_FILE": str(root / CONFIG)}
    probe = (
        "import google.protobuf as g, uvloop, kata_shim.proto.task_pb2;"
        "print(g.__version__, g.__file__, uvloop.__version__)"
    )
    done = subprocess.run(
        ["/usr/bin/python3", "-s", "-c", probe], env=env, cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    version, location, uvloop_version = done.stdout.split()
    assert location.startswith("/usr/lib/python3/dist-packages/"), location
    assert (version, uvloop_version) == ("4.21.12", "0.17.0"), "not Debian 12's packages"
    shim = tmp_path / "installed-shim"
    exports = " ".join(f"{key}={value}" for key, value in env.items())
    script = root / "usr/bin/containerd-shim-kata-v2-py"
    shim.write_text(f'#!/bin/sh\nexport {exports}\nexec /usr/bin/python3 -s {script} "$@"\n')
    shim.chmod(0o755)
    check = subprocess.run(
        [sys.executable, str(START_CONTRACT), str(tmp_path)],
        env={**os.environ, "KATA_SHIM": str(shim)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    print(check.stdout)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "START-CONTRACT 5/5" in check.stdout


def test_installed_cli_reads_the_installed_config(root: Path) -> None:
    done = _run_installed(root, "kata-shim", "env")
    assert done.returncode == 0, done.stderr
    assert f"# configuration: {root / CONFIG} (KATA_CONF_FILE)" in done.stdout


def test_installed_unit_verifies(root: Path) -> None:
    systemd_root.prepare(root)
    done = systemd_root.verify(root, "kata-shim-monitor.service")
    assert (done.returncode, done.stdout) == (0, "")
