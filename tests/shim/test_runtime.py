"""ShimRuntime: the daemon's provider_loader (configuration → sandboxes) for the task service."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim.devenv.shim import write_config
from kata_shim.errors import InvalidArgument
from kata_shim.proto import runtimeoptions_pb2
from kata_shim.shim.runtime import ShimRuntime

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _restore_root_level() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    try:
        yield
    finally:
        root.setLevel(level)


def _options(path: Path) -> bytes:
    value = runtimeoptions_pb2.Options(config_path=str(path)).SerializeToString()
    return AnyMessage(type_url="runtimeoptions.v1.Options", value=value).SerializeToString()


def test_create_options_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KATA_CONF_FILE", raising=False)
    config = write_config(tmp_path / "c.toml", state_dir=tmp_path / "sbs")
    loaded = ShimRuntime(str(tmp_path)).load_config(str(config))
    assert loaded.source == str(config)
    assert loaded.runtime.state_dir == str(tmp_path / "sbs")


def test_falls_back_to_the_options_start_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KATA_CONF_FILE", raising=False)
    config = write_config(tmp_path / "saved.toml", state_dir=tmp_path / "sbs")
    (tmp_path / "options.pb").write_bytes(_options(config))
    assert ShimRuntime(str(tmp_path)).load_config(None).source == str(config)


def test_bad_configuration_is_invalid_argument(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[hypervisor.local]\n[hypervisor.qemu]\n")
    with pytest.raises(InvalidArgument, match=r"bad\.toml: exactly one hypervisor table"):
        ShimRuntime(str(tmp_path)).load(str(bad))


def test_enable_debug_raises_the_log_level(tmp_path: Path) -> None:
    logging.getLogger().setLevel(logging.INFO)
    config = write_config(tmp_path / "c.toml", state_dir=tmp_path / "sbs", debug=True)
    ShimRuntime(str(tmp_path)).load(str(config))
    assert logging.getLogger().level == logging.DEBUG


def test_the_provider_builds_the_configured_backend(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", state_dir=tmp_path / "sbs")
    runtime = ShimRuntime(str(tmp_path), debug=True)
    sandbox = runtime.load(str(config))("sb1")
    assert sandbox.backend == "local"
    assert sandbox.spec.sandbox_id == "sb1"
    assert sandbox.spec.state_dir == tmp_path / "sbs" / "sb1"
    assert sandbox.spec.debug is True
    assert sandbox.spec.agent.dial_timeout == 30
