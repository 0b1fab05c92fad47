"""Flag parsing: Go `flag` forms (-x, --x, -x=v), actions, and the errors main turns into exit 1."""

from __future__ import annotations

import pytest

from kata_shim.shim.flags import FlagError, parse_flags, require_ids
from kata_shim.shim.main import main, version_line

pytestmark = pytest.mark.timeout(10)

CONTAINERD_START = [
    "-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
    "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start",
]  # fmt: skip


def test_containerd_start_command_line() -> None:
    flags = parse_flags(CONTAINERD_START)
    assert (flags.namespace, flags.id, flags.action) == ("k8s.io", "abc", "start")
    assert flags.address == "/run/containerd/containerd.sock"
    assert flags.publish_binary == "/usr/bin/containerd"
    assert flags.debug is True


def test_isulad_double_dash_start() -> None:
    flags = parse_flags(["--id", "c1", "--namespace", "isula", "start"])
    assert (flags.namespace, flags.id, flags.action, flags.address) == ("isula", "c1", "start", "")
    assert flags.debug is False


@pytest.mark.parametrize(
    "argv",
    [
        ["-id=x", "-namespace=n", "-bundle=/b", "delete"],
        ["--id=x", "--namespace=n", "--bundle=/b", "delete"],
        ["-id", "x", "--namespace=n", "-bundle", "/b", "delete"],
    ],
)
def test_equals_and_mixed_forms(argv: list[str]) -> None:
    flags = parse_flags(argv)
    assert (flags.id, flags.namespace, flags.bundle, flags.action) == ("x", "n", "/b", "delete")


def test_no_action_means_serve_and_socket_flag() -> None:
    flags = parse_flags(["-namespace", "n", "-id", "x", "-socket", "/tmp/s.sock"])
    assert flags.action == "serve"
    assert flags.socket == "/tmp/s.sock"


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False), ("1", True)])
def test_boolean_with_value(text: str, value: bool) -> None:
    assert parse_flags([f"-debug={text}"]).debug is value


def test_value_may_start_with_dash_when_separate() -> None:
    assert parse_flags(["-id", "-weird"]).id == "-weird"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-bogus", "start"], "flag provided but not defined: -bogus"),
        (["--namespace"], "flag needs an argument: -namespace"),
        (["-debug=maybe"], "invalid boolean value"),
        (["run"], "unknown action 'run'"),
        (["start", "delete"], "unexpected arguments"),
        (["---id", "x"], "bad flag syntax"),
    ],
)
def test_bad_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        parse_flags(argv)


def test_missing_namespace_and_id_are_errors() -> None:
    with pytest.raises(FlagError, match="namespace cannot be empty"):
        require_ids(parse_flags(["-id", "x", "start"]))
    with pytest.raises(FlagError, match="id cannot be empty"):
        require_ids(parse_flags(["-namespace", "n", "start"]))


def test_main_exits_1_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-id", "x", "start"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "shim namespace cannot be empty" in captured.err
    assert main(["-namespace", "n", "-id", "x", "-nope"]) == 1
    assert "flag provided but not defined: -nope" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["-v", "--version", "-version"])
def test_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([flag]) == 0
    out = capsys.readouterr().out
    assert out == version_line() + "\n"
    assert out.startswith("containerd-shim-kata-v2 (kata-shim) ")


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "x" * 200])
def test_require_ids_refuses_ids_that_are_not_identifiers(bad: str) -> None:
    with pytest.raises(FlagError, match="-id"):
        require_ids(parse_flags(["-namespace", "n", "-id", bad, "delete"]))
    with pytest.raises(FlagError, match="-namespace"):
        require_ids(parse_flags(["-namespace", bad, "-id", "x", "delete"]))
