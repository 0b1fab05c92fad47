"""`kata-shim` entry point: --version, --help everywhere, exit codes, env, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kata_shim import __version__
from kata_shim.cli.main import main

pytestmark = pytest.mark.timeout(60)

CLI = [sys.executable, "-m", "kata_shim.cli.main"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, check=False)


def test_version() -> None:
    done = _run("--version")
    assert (done.returncode, done.stdout) == (0, f"kata-shim {__version__}\n")


@pytest.mark.parametrize(
    "args",
    [[], ["check"], ["env"], ["sandboxes"], ["exec"], ["image"], ["image", "build"]],
)
def test_help_everywhere(args: list[str]) -> None:
    done = _run(*args, "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: kata-shim"), done.stderr


@pytest.mark.parametrize("args", [[], ["bogus"], ["env", "--nope"], ["image"], ["exec"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    done = _run(*args)
    assert done.returncode == 2 and "usage:" in done.stderr and done.stdout == ""


def _config(path: Path, state_dir: str = "/run/kata-shim") -> Path:
    path.write_text(
        f'[hypervisor.local]\nenable_debug = true\n[runtime]\nstate_dir = "{state_dir}"\n'
        "[agent.kata]\nbogus_key = 1\n"
    )
    return path


def test_env_follows_kata_conf_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KATA_CONF_FILE", str(_config(tmp_path / "c.toml")))
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"# configuration: {tmp_path}/c.toml (KATA_CONF_FILE)" in out
    assert "[hypervisor.local]\nenable_debug = true\n" in out
    assert "# warning:" in out and "bogus_key" in out
    assert main(["env", "--json", "--config", str(tmp_path / "c.toml")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reason"] == "runtime options" and data["config"]["runtime"]["state_dir"]


def test_bad_config_is_one_line_with_a_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.toml").write_text("[hypervisor.qemu\n")
    monkeypatch.setenv("KATA_CONF_FILE", str(tmp_path / "bad.toml"))
    for command in (["env"], ["check"], ["sandboxes"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("kata-shim: ") and "fix" in err


def test_sandboxes_uses_the_configured_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sbs" / "pod-a").mkdir(parents=True)
    monkeypatch.setenv("KATA_CONF_FILE", str(_config(tmp_path / "c.toml", f"{tmp_path}/sbs")))
    assert main(["sandboxes", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert (entry["id"], entry["state"]) == ("pod-a", "stale")


def test_check_on_this_host_prints_every_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KATA_CONF_FILE", str(_config(tmp_path / "c.toml")))
    status = main(["check"])
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[1] for line in lines if line[:4] in ("PASS", "WARN", "FAIL")]
    assert names == [
        "config", "qemu", "accelerator", "vhost-vsock", "guest", "runc", "containerd", "guest",
            "shared",
    ]  # fmt: skip
    assert status == (1 if lines[-1].startswith("not ready") else 0)


def test_exec_outside_a_vm_sandbox_is_one_line_with_a_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["exec", "--state-dir", str(tmp_path), "no-such-pod"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kata-shim: ")
