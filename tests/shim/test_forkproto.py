"""The fork server's wire helpers and the forked daemon's command line, without containerd."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from kata_shim.shim import forkproto


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def test_message_round_trip_carries_fds() -> None:
    left, right = pair()
    read_end, write_end = os.pipe()
    with left, right:
        forkproto.send_message(left, {"argv": ["x"], "n": 1}, [write_end])
        message, fds = forkproto.receive_message(right, max_fds=2)
        assert message == {"argv": ["x"], "n": 1}
        assert len(fds) == 1
        os.write(fds[0], b"ok")
        assert os.read(read_end, 2) == b"ok"
    for fd in (read_end, write_end, *fds):
        os.close(fd)


def test_garbage_and_eof_are_unavailable_and_close_passed_fds() -> None:
    left, right = pair()
    read_end, write_end = os.pipe()
    with left, right:
        left.sendmsg(
            [b"[1, 2]"],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, write_end.to_bytes(4, sys.byteorder))],
        )
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(forkproto.ForkUnavailable, match="not an object"):
            forkproto.receive_message(right, max_fds=1)
        assert set(os.listdir("/proc/self/fd")) <= before  # the received copy was closed
        left.shutdown(socket.SHUT_WR)
        with pytest.raises(forkproto.ForkUnavailable, match="closed"):
            forkproto.receive_message(right)
    os.close(read_end)
    os.close(write_end)


def test_request_to_a_missing_server_is_unavailable() -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener, pytest.raises(forkproto.ForkUnavailable, match="not running"):
        forkproto.request_daemon("/nonexistent/fork.sock", ["x"], [], "/", listener)


def test_server_paths_are_per_containerd_and_root_only_dir() -> None:
    one, two = forkproto.server_paths("/run/a.sock"), forkproto.server_paths("/run/b.sock")
    assert one["socket"] != two["socket"]
    assert one["socket"].startswith(forkproto.FORK_DIR + "/")
    assert forkproto.server_paths("/run/a.sock") == one


def test_build_id_is_stable_within_one_install() -> None:
    assert forkproto.build_id() == forkproto.build_id()


def test_set_title_rewrites_cmdline_and_comm() -> None:
    code = (
        "from kata_shim.shim.proctitle import set_title\n"
        "set_title(['/usr/bin/containerd-shim-kata-v2', '-namespace', 'n', '-id', 'x' * 300])\n"
        "print(open('/proc/self/cmdline', 'rb').read().decode().replace('\\0', ' '))\n"
        "print(open('/proc/self/comm').read().strip())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cmdline, comm = out.stdout.splitlines()
    assert cmdline == "/usr/bin/containerd-shim-kata-v2 -namespace n -id " + "x" * 300 + " "
    assert comm == "containerd-shim"


def test_replace_environ_makes_both_environments_exactly_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KS_KEPT", "same")
    monkeypatch.setenv("KS_CHANGED", "old")
    monkeypatch.setenv("KS_GONE", "x")
    wanted = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
    wanted |= {"KS_KEPT": "same", "KS_CHANGED": "new", "KS_ADDED": "a=b"}
    saved = dict(os.environ)
    # a child gets the C environment; C code (readline: LINES, COLUMNS) may have set some
    # that os.environ never knew of, and os.environ cannot remove those
    c_only = _c_environ().keys() - os.environ.keys()
    try:
        forkproto.replace_environ(wanted)
        assert dict(os.environ) == wanted
        seen = _c_environ()
        assert {key: seen[key] for key in seen.keys() - c_only} == wanted
    finally:
        forkproto.replace_environ(saved)


def _c_environ() -> dict[str, str]:
    seen = subprocess.run(["env", "-0"], env=None, capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in seen.decode().split("\0") if item)
