"""Debug console pieces without a VM: QEMU arguments, config, errors, the end marker, the bridge."""

from __future__ import annotations

import argparse
import os
import pty
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from kata_shim.cli.exec_cmd import register
from kata_shim.config.schema import build_config
from kata_shim.debugconsole import END_PREFIX, END_SUFFIX
from kata_shim.debugconsole.client import ConsoleError, EndScanner, attach, console_socket
from kata_shim.sandbox.qemu.cmdline import QemuConfig, SandboxPaths, build_command

pytestmark = pytest.mark.timeout(30)

PATHS = SandboxPaths(
    Path("/s/qmp.sock"), Path("/s/agent.sock"), Path("/s/console.log"), Path("/s/shared")
)


def test_qemu_gets_a_second_port_only_when_enabled() -> None:
    plain = " ".join(build_command(QemuConfig(), PATHS, "tcg", 1))
    assert "console" not in plain.replace("console=ttyS0", "").replace("console.log", "")
    argv = build_command(QemuConfig(debug_console_enabled=True), PATHS, "tcg", 1)
    joined = " ".join(argv)
    assert "socket,id=console,path=/s/console.sock,server=on,wait=off" in joined
    assert "virtserialport,chardev=console,name=console.0" in joined
    assert joined.count("virtio-serial-device") == 1  # the agent's bus carries both ports
    assert "kata_shim.debug_console=1" in argv[argv.index("-append") + 1]


@pytest.mark.parametrize("section", ["hypervisor.qemu", "agent.kata"])
def test_config_key_in_either_section_reaches_the_backend(section: str) -> None:
    data: dict[str, dict[str, object]] = {"hypervisor": {"qemu": {}}, "agent": {"kata": {}}}
    table = data["hypervisor"]["qemu"] if section == "hypervisor.qemu" else data["agent"]["kata"]
    assert isinstance(table, dict)
    table["debug_console_enabled"] = True
    config = build_config("test.toml", data)
    assert not config.warnings
    hypervisor = config.hypervisor.table
    assert QemuConfig.from_table(hypervisor).debug_console_enabled


def test_errors_say_what_is_wrong_and_how_to_fix_it(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "agent.sock").touch()
    (tmp_path / "qemu").mkdir()
    (tmp_path / "qemu" / "qmp.sock").touch()
    (tmp_path / "lv" / "vm").mkdir(parents=True)
    expected = {
        "nope": "not found under",
        "local": "local backend: no VM",
        "qemu": "set debug_console_enabled = true",
        "lv": "libvirt backend",
    }
    for sandbox, words in expected.items():
        with pytest.raises(ConsoleError, match=words):
            console_socket(tmp_path, sandbox)


def test_exec_command_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    argv = [sys.executable, "-m", "kata_shim.cli.exec_cmd", "local", "--state-dir", str(tmp_path)]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 1
    assert result.stderr.startswith("kata-shim: sandbox local runs on the local backend")
    assert result.stderr.count("\n") == 1


def test_register_adds_exec_to_a_parser() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["exec", "sb1", "--state-dir", "/x"])
    assert (args.sandbox_id, args.state_dir, callable(args.handler)) == ("sb1", Path("/x"), True)


def test_end_scanner_holds_back_a_split_marker() -> None:
    scanner = EndScanner()
    marker = END_PREFIX + b"42" + END_SUFFIX
    shown = b"".join(scanner.feed(marker[i : i + 3]) for i in range(0, len(marker), 3))
    assert scanner.status == 42 and shown == b""
    scanner = EndScanner()
    assert scanner.feed(b"out\x1b") == b"out"  # may start a marker
    assert scanner.feed(b"[0m") == b"\x1b[0m" and scanner.status is None


def test_attach_pipes_input_and_returns_the_shell_status(tmp_path: Path) -> None:
    """A fake guest relay: echoes what it gets, ends with the marker on `exit`."""
    path = tmp_path / "console.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def guest() -> None:
        conn, _ = listener.accept()
        received = b""
        while not received.endswith(b"exit\n"):
            received += conn.recv(1024)
        conn.sendall(b"got:" + received + END_PREFIX + b"3" + END_SUFFIX)
        conn.recv(1)  # until the client closes
        conn.close()

    thread = threading.Thread(target=guest)
    thread.start()
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    os.write(stdin_w, b"uname -r\n")
    os.close(stdin_w)
    try:
        assert attach(path, stdin_r, stdout_w) == 3
    finally:
        os.close(stdout_w)
        thread.join(10)
        listener.close()
    with os.fdopen(stdout_r, "rb") as out:
        assert out.read() == b"got:uname -r\n\nexit\n"
    os.close(stdin_r)


def test_attach_on_a_terminal_is_raw_and_ctrl_close_bracket_detaches(tmp_path: Path) -> None:
    path = tmp_path / "console.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    seen: list[bytes] = []

    def guest() -> None:
        conn, _ = listener.accept()
        deadline = time.monotonic() + 10
        while termios.tcgetattr(slave)[3] & termios.ICANON and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(master, b"ls\r")  # raw: sent as typed, no line buffering, no CR → NL
        seen.append(conn.recv(1024))
        os.write(master, b"\x1d")  # the user detaches
        conn.recv(1)
        conn.close()

    thread = threading.Thread(target=guest)
    thread.start()
    stdout_r, stdout_w = os.pipe()
    try:
        assert attach(path, slave, stdout_w) == 0
    finally:
        thread.join(10)
        listener.close()
        for fd in (stdout_r, stdout_w):
            os.close(fd)
    assert seen == [b"ls\r"]
    assert termios.tcgetattr(slave) == before  # restored
    os.close(master)
    os.close(slave)
