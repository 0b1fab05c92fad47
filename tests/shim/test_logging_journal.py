"""journald logging: native-protocol encoding, a real systemd-journald, debug switch, stderr.

The journald test starts `/lib/systemd/systemd-journald <namespace>` by hand (a
journal namespace: its own sockets under /run/systemd/journal.<ns>/, its own
files, no /dev/log, no kmsg), points the shim at it with
$KATA_SHIM_JOURNAL_SOCKET and reads the lines back with
`journalctl --namespace <ns> -t kata`.
"""

from __future__ import annotations

import array
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.shim import journal, logging_setup
from kata_shim.shim.journal import JournalHandler, encode_fields

pytestmark = pytest.mark.timeout(30)

JOURNALD = Path("/lib/systemd/systemd-journald")


def parse_fields(payload: bytes) -> dict[str, str]:
    """The inverse of the native protocol (what journald does with a datagram)."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(payload):
        end = payload.index(b"\n", pos)
        line = payload[pos:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            pos = end + 1
        else:
            (size,) = struct.unpack("<Q", payload[end + 1 : end + 9])
            name, value = line, payload[end + 9 : end + 9 + size]
            assert payload[end + 9 + size : end + 10 + size] == b"\n"
            pos = end + 10 + size
        fields[name.decode()] = value.decode()
    return fields


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """setup_logging rewires the root logger and fd 2: restore both afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved_stderr = os.dup(2)
    root.handlers = []
    try:
        yield root
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = handlers, level
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)


@pytest.fixture
def fake_journal(tmp_path: Path) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "journal.sock"))
    server.settimeout(5)
    yield server
    server.close()


def _receive(server: socket.socket) -> dict[str, str]:
    fds = array.array("i")
    data, ancdata, _, _ = server.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, cmsg in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cmsg[: len(cmsg) - (len(cmsg) % fds.itemsize)])
    if fds:  # the memfd form: the payload is the file's content
        with os.fdopen(fds[0], "rb") as memfd:
            data = os.pread(memfd.fileno(), 1 << 23, 0)  # shared offset: at the end
    return parse_fields(data)


def test_binary_form_for_values_with_newlines() -> None:
    payload = encode_fields({"MESSAGE": "two\nlines", "PRIORITY": "6"})
    assert payload.startswith(b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\n")
    assert parse_fields(payload) == {"MESSAGE": "two\nlines", "PRIORITY": "6"}


def test_record_fields_on_a_fake_journal_socket(
    fake_journal: socket.socket, tmp_path: Path
) -> None:
    handler = JournalHandler(str(tmp_path / "journal.sock"), {"KATA_ID": "abc"})
    logging.getLogger("kata_shim.t").addHandler(handler)
    try:
        logging.getLogger("kata_shim.t").warning("disk %s", "full")
    finally:
        logging.getLogger("kata_shim.t").removeHandler(handler)
        handler.close()
    fields = _receive(fake_journal)
    assert fields["MESSAGE"] == "disk full"
    assert fields["SYSLOG_IDENTIFIER"] == "kata"
    assert fields["PRIORITY"] == "4"
    assert fields["KATA_ID"] == "abc"
    assert fields["SYSLOG_PID"] == str(os.getpid())


def test_a_huge_record_goes_through_a_sealed_memfd(
    fake_journal: socket.socket, tmp_path: Path
) -> None:
    handler = JournalHandler(str(tmp_path / "journal.sock"))
    big = "x" * (4 << 20)  # larger than any AF_UNIX datagram
    handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, big, None, None))
    handler.close()
    assert handler.dropped == 0
    assert _receive(fake_journal)["MESSAGE"] == big


def test_no_reader_drops_instead_of_raising(tmp_path: Path) -> None:
    handler = JournalHandler(str(tmp_path / "gone.sock"))
    handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "lost", None, None))
    handler.close()
    assert handler.dropped == 1


def test_journal_socket_only_when_it_is_a_socket(
    tmp_path: Path, fake_journal: socket.socket
) -> None:
    sock = str(tmp_path / "journal.sock")
    assert journal.journal_socket({journal.SOCKET_ENV: sock}) == sock
    (tmp_path / "plain").write_text("")
    assert journal.journal_socket({journal.SOCKET_ENV: str(tmp_path / "plain")}) is None
    assert journal.journal_socket({journal.SOCKET_ENV: str(tmp_path / "missing")}) is None


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [(True, "", True), (False, "1", True), (False, "yes", True), (False, "0", False)],
)
def test_debug_from_flag_or_env(flag: bool, value: str, expected: bool) -> None:
    assert logging_setup.debug_requested(flag, {logging_setup.DEBUG_ENV: value}) is expected


def test_env_var_turns_on_debug_in_the_bundle_log(
    root_logger: logging.Logger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(logging_setup.DEBUG_ENV, "1")
    monkeypatch.setenv(journal.SOCKET_ENV, str(tmp_path / "no-journal"))
    (tmp_path / "log").write_text("")
    assert logging_setup.setup_logging(str(tmp_path), "k8s.io", "t1", False) == str(
        tmp_path / "log"
    )
    logging.getLogger("kata_shim.x").debug("detail")
    assert "DEBUG kata-shim" in (tmp_path / "log").read_text()
    assert "ns=k8s.io id=t1 kata_shim.x: detail" in (tmp_path / "log").read_text()


def test_stderr_when_nothing_else_and_never_stdout(
    root_logger: logging.Logger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(logging_setup.DEBUG_ENV, raising=False)
    monkeypatch.setenv(journal.SOCKET_ENV, str(tmp_path / "no-journal"))
    assert logging_setup.setup_logging(str(tmp_path / "no-bundle"), "ns", "t2", False) is None
    logging.getLogger("kata_shim.x").info("to stderr")
    logging.getLogger("kata_shim.x").debug("not at info level")
    out, err = capfd.readouterr()
    assert out == ""
    assert "ns=ns id=t2 kata_shim.x: to stderr" in err and "not at info" not in err


@pytest.fixture
def journald() -> Iterator[str]:
    """A private systemd-journald (journal namespace); yields the namespace."""
    assert JOURNALD.exists(), "systemd (scripts/dev.sh installs it) provides systemd-journald"
    namespace = f"katatest{uuid.uuid4().hex[:8]}"
    sockets = Path(f"/run/systemd/journal.{namespace}")
    proc = subprocess.Popen(
        [str(JOURNALD), namespace], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not (sockets / "socket").exists():
            assert proc.poll() is None, "systemd-journald exited"
            assert time.monotonic() < deadline, "systemd-journald did not create its socket"
            time.sleep(0.05)
        yield namespace
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stores = [*Path("/var/log/journal").glob(f"*.{namespace}")]
        stores += Path("/run/log/journal").glob(f"*.{namespace}")  # no /var/log/journal
        for path in (sockets, *stores):
            shutil.rmtree(path, ignore_errors=True)


def _journal_lines(namespace: str, want: int) -> list[dict[str, str]]:
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(
            ["journalctl", f"--namespace={namespace}", "-t", "kata", "-o", "json", "--no-pager"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(entries) >= want or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)


def test_lines_reach_a_real_journald_under_kata(
    root_logger: logging.Logger,
    journald: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(journal.SOCKET_ENV, f"/run/systemd/journal.{journald}/socket")
    monkeypatch.delenv(logging_setup.DEBUG_ENV, raising=False)
    (tmp_path / "log").write_text("")
    logging_setup.setup_logging(str(tmp_path), "default", "pod1", True)
    logging.getLogger("kata_shim.task").info("created\ncontainer c1")
    logging.getLogger("kata_shim.task").debug("debug detail")
    entries = _journal_lines(journald, 2)
    messages = [entry["MESSAGE"] for entry in entries]
    assert messages == ["kata_shim.task: created\ncontainer c1", "kata_shim.task: debug detail"]
    assert entries[0]["PRIORITY"] == "6" and entries[1]["PRIORITY"] == "7"
    assert entries[0]["KATA_ID"] == "pod1" and entries[0]["KATA_NAMESPACE"] == "default"
    assert int(entries[0]["_PID"]) == os.getpid()
    assert "container c1" in (tmp_path / "log").read_text()  # and the bundle log still


@pytest.mark.parametrize(
    "table",
    [
        "[hypervisor.local]\nenable_debug = true\n",
        "[hypervisor.local]\n[agent.kata]\nenable_debug = true\n",
    ],
)
def test_enable_debug_in_any_section_raises_the_level(
    root_logger: logging.Logger, tmp_path: Path, table: str
) -> None:
    from kata_shim.shim.runtime import ShimRuntime

    (tmp_path / "c.toml").write_text(table)
    root_logger.setLevel(logging.INFO)
    ShimRuntime(str(tmp_path)).load(str(tmp_path / "c.toml"))
    assert root_logger.level == logging.DEBUG


def test_a_real_shim_daemon_logs_to_journald(
    journald: str, shim_bin: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The shim binary in serve mode, as containerd/iSulad start it, with the debug env var."""
    from tests.shim.conftest import make_bundle, unique_id

    task_id = unique_id()
    bundle = make_bundle(tmp_path, task_id)
    sock_dir = Path(tempfile.mkdtemp(prefix="kst-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(sock_dir, ignore_errors=True))
    env = {
        **os.environ,
        journal.SOCKET_ENV: f"/run/systemd/journal.{journald}/socket",
        logging_setup.DEBUG_ENV: "1",
    }
    argv = [str(shim_bin), "-namespace", "kstest", "-id", task_id, "-socket", f"{sock_dir}/s"]
    proc = subprocess.Popen(argv, cwd=bundle, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not (sock_dir / "s").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "daemon never listened"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    entries = [e for e in _journal_lines(journald, 2) if e.get("KATA_ID") == task_id]
    messages = "\n".join(entry["MESSAGE"] for entry in entries)
    assert "serving on" in messages and "received SIGTERM" in messages
    assert {int(entry["_PID"]) for entry in entries} == {proc.pid}
    assert {entry["KATA_NAMESPACE"] for entry in entries} == {"kstest"}
    assert "serving on" in (bundle / "log").read_text()
