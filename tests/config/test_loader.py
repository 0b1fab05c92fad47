"""Which configuration.toml is used: options → KATA_CONF_FILE → /etc → /usr/share → embedded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kata_shim.config import EMBEDDED_CONFIG, ConfigError, choose_config_file, load_config
from kata_shim.config.loader import DEFAULT_PATHS

pytestmark = pytest.mark.timeout(10)


def _write(path: Path, state: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[hypervisor.local]\n[runtime]\nstate_dir = "/run/{state}"\n')
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        name: _write(tmp_path / name / "configuration.toml", name)
        for name in ("options", "env", "etc", "share")
    }


def test_default_locations_are_katas() -> None:
    assert [str(p) for p in DEFAULT_PATHS] == [
        "/etc/kata-containers/configuration.toml",
        "/usr/share/defaults/kata-containers/configuration.toml",
    ]


def test_runtime_options_win(files: dict[str, Path]) -> None:
    env = {"KATA_CONF_FILE": str(files["env"])}
    defaults = [files["etc"], files["share"]]
    config = load_config(str(files["options"]), env=env, defaults=defaults)
    assert config.source == str(files["options"])
    assert config.runtime.state_dir == "/run/options"


def test_env_beats_defaults(files: dict[str, Path]) -> None:
    env = {"KATA_CONF_FILE": str(files["env"])}
    path, reason = choose_config_file(None, env=env, defaults=[files["etc"], files["share"]])
    assert (path, reason) == (files["env"], "KATA_CONF_FILE")


def test_etc_beats_share_and_share_beats_embedded(files: dict[str, Path], tmp_path: Path) -> None:
    assert (
        choose_config_file(None, env={}, defaults=[files["etc"], files["share"]])[0] == files["etc"]
    )
    missing = tmp_path / "nope.toml"
    assert choose_config_file(None, env={}, defaults=[missing, files["share"]])[0] == files["share"]
    assert choose_config_file(None, env={}, defaults=[missing]) == (
        EMBEDDED_CONFIG,
        "embedded default",
    )


def test_empty_env_var_is_ignored(files: dict[str, Path]) -> None:
    path, _ = choose_config_file(None, env={"KATA_CONF_FILE": ""}, defaults=[files["share"]])
    assert path == files["share"]


@pytest.mark.parametrize(
    ("config_path", "env", "origin"),
    [
        ("/nonexistent/a.toml", {}, "runtime options config_path"),
        (None, {"KATA_CONF_FILE": "/nonexistent/b.toml"}, "KATA_CONF_FILE"),
    ],
)
def test_explicit_choice_must_exist(
    config_path: str | None, env: dict[str, str], origin: str
) -> None:
    with pytest.raises(ConfigError, match=f"does not exist.*{origin}|{origin}"):
        load_config(config_path, env=env, defaults=[])


def test_embedded_default_is_qemu_with_the_built_image() -> None:
    config = load_config(None, env={}, defaults=[])
    assert config.source == str(EMBEDDED_CONFIG)
    assert config.hypervisor.type == "qemu"
    assert config.runtime.state_dir == "/run/kata-shim"
    assert config.agent.dial_timeout == 120.0
    assert config.warnings == ()  # the embedded file uses only known keys
    table = config.hypervisor.table
    assert (table["kernel"], table["image"]) == (
        "/var/lib/kata/vmlinux",
        "/var/lib/kata/kata-shim-rootfs.img",
    )
    assert "initrd" not in table and table["tcg_tb_size_mb"] == 32
    assert (table["accel"], table["machine_type"]) == ("auto", "microvm")


def test_choice_and_warnings_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[hypervisor.local]\nfancy = 1\n")
    with caplog.at_level(logging.INFO, logger="kata_shim.config"):
        load_config(None, env={"KATA_CONF_FILE": str(path)}, defaults=[])
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(path) in m and "KATA_CONF_FILE" in m for m in messages)
    assert any("unknown key 'fancy'" in m for m in messages)
