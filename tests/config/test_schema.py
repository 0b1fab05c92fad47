"""Validation: exactly one hypervisor, typed keys with clear errors, unknown keys as warnings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kata_shim.config import ConfigError, load_config
from kata_shim.config.loader import read_config_file

pytestmark = pytest.mark.timeout(10)

QEMU_TABLE = """\
[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = "/var/lib/kata/vmlinux"
initrd = "/var/lib/kata/kata-shim-initrd.img"
machine_type = "q35"
default_vcpus = 1
default_memory = 2048
kernel_params = "cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
shared_fs = "virtio-9p"
enable_debug = true
accel = "tcg"
agent_channel = "virtio-serial"
valid_hypervisor_paths = ["/usr/bin/qemu-system-x86_64"]
virtio_fs_extra_args = ["--thread-pool-size=1"]

[agent.kata]
enable_debug = true
debug_console_enabled = true
dial_timeout = 90
kernel_modules = ["e1000e InterruptThrottleRate=3000,3000,3000 EEE=1", "i915"]

[runtime]
enable_debug = true
state_dir = "/run/vc/sbs/"
sandbox_cgroup_only = true
internetworking_model = "tcfilter"
"""


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "configuration.toml"
    path.write_text(text)
    return read_config_file(path)


def test_a_kata_style_qemu_file_loads(tmp_path: Path) -> None:
    config = _load(tmp_path, QEMU_TABLE)
    assert config.warnings == ()
    assert config.hypervisor.type == "qemu"
    assert config.hypervisor.table["machine_type"] == "q35"
    assert config.hypervisor.enable_debug is True
    assert config.agent.kernel_modules == (
        "e1000e InterruptThrottleRate=3000,3000,3000 EEE=1",
        "i915",
    )
    assert config.agent.dial_timeout == 90.0 and config.agent.debug_console_enabled
    assert config.runtime.state_dir == "/run/vc/sbs"  # normalised
    assert config.runtime.internetworking_model == "tcfilter"
    assert config.runtime.sandbox_cgroup_only and config.debug


def test_config_is_frozen(tmp_path: Path) -> None:
    config = _load(tmp_path, "[hypervisor.local]\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.source = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.hypervisor.table["enable_debug"] = True  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agent.kata]\ndial_timeout = 1\n", "no \\[hypervisor.<type>\\] table"),
        ("[hypervisor.local]\n[hypervisor.qemu]\n", "exactly one hypervisor table expected"),
        ("[hypervisor.firecracker]\n", "'firecracker' is not supported .*local, qemu, libvirt"),
        ("[hypervisor.qemu]\nimage = 'a'\ninitrd = 'b'\n", "cannot set both image and initrd"),
        ("[hypervisor.local]\n[runtime]\nstate_dir = 'rel/dir'\n", "state_dir: must be absolute"),
        ("[hypervisor.local]\n[agent.kata]\ndial_timeout = 0\n", "dial_timeout: must be > 0"),
        (
            "[hypervisor.qemu]\n[runtime]\ninternetworking_model = 'bridged'\n",
            "internetworking_model: 'bridged' is not supported .*tcfilter, macvtap, none",
        ),
        ("[hypervisor.local\n", "invalid TOML"),
        ("hypervisor = 3\n", "no \\[hypervisor"),
    ],
)
def test_structural_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, text)
    assert str(tmp_path / "configuration.toml") in str(info.value)


@pytest.mark.parametrize(
    ("text", "table", "key", "expected"),
    [
        ("[hypervisor.qemu]\ndefault_memory = '2G'\n", "hypervisor.qemu", "default_memory",
         "an integer"),
        ("[hypervisor.qemu]\ndefault_memory = true\n", "hypervisor.qemu", "default_memory",
         "an integer"),
        ("[hypervisor.qemu]\ndefault_vcpus = '1'\n", "hypervisor.qemu", "default_vcpus",
         "a number"),
        ("[hypervisor.local]\nenable_debug = 'yes'\n", "hypervisor.local", "enable_debug",
         "a boolean"),
        ("[hypervisor.local]\n[agent.kata]\nkernel_modules = 'a'\n", "agent.kata",
         "kernel_modules", "a list of strings"),
        ("[hypervisor.local]\n[agent.kata]\nkernel_modules = [1]\n", "agent.kata",
         "kernel_modules", "a list of strings"),
        ("[hypervisor.local]\n[runtime]\nstate_dir = 5\n", "runtime", "state_dir", "a string"),
        ("[hypervisor.libvirt]\nuri = false\n", "hypervisor.libvirt", "uri", "a string"),
    ],
)  # fmt: skip
def test_wrong_types_name_file_table_and_key(
    tmp_path: Path, text: str, table: str, key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "configuration.toml") + ": ")
    assert f"[{table}] {key}: expected {expected}, got " in message


def test_number_accepts_int_and_float(tmp_path: Path) -> None:
    config = _load(
        tmp_path, "[hypervisor.qemu]\ndefault_vcpus = 1.5\n[agent.kata]\ndial_timeout = 2.5\n"
    )
    assert config.hypervisor.table["default_vcpus"] == 1.5
    assert config.agent.dial_timeout == 2.5


def test_unknown_keys_and_tables_are_warnings(tmp_path: Path) -> None:
    text = (
        "[hypervisor.local]\nshiny = 1\n"
        "[agent.kata]\nfuture_knob = true\n"
        "[agent.other]\nx = 1\n"
        "[runtime]\nnew_thing = 'x'\n"
        "[factory]\nenable_template = false\nmystery = 2\n"
        "[something]\n"
    )
    config = _load(tmp_path, text)
    joined = "\n".join(config.warnings)
    for needle in (
        "[hypervisor.local] unknown key 'shiny'",
        "[agent.kata] unknown key 'future_knob'",
        "unknown table [agent.other]",
        "[runtime] unknown key 'new_thing'",
        "[factory] unknown key 'mystery'",
        "unknown top-level key or table 'something'",
    ):
        assert needle in joined
    assert config.hypervisor.table["shiny"] == 1  # kept, for the backend to ignore


def test_factory_types_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[factory\] vm_cache_number: expected an integer"):
        _load(tmp_path, "[hypervisor.local]\n[factory]\nvm_cache_number = 'x'\n")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(str(tmp_path), env={}, defaults=[])
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path)


@pytest.mark.parametrize(
    ("line", "model"),
    [("", "tcfilter"), ("internetworking_model = 'macvtap'", "macvtap"),
     ("internetworking_model = 'none'", "none"), ("internetworking_model = 'default'", "tcfilter")],
)  # fmt: skip
def test_internetworking_model(tmp_path: Path, line: str, model: str) -> None:
    config = _load(tmp_path, f"[hypervisor.qemu]\n[runtime]\n{line}\n")
    assert config.runtime.internetworking_model == model
