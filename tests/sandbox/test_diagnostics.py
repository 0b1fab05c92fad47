"""Start-up failure reports (sandbox/diagnostics.py) and the QEMU backend's use of them,
with a fake QEMU (a script) that fails the way a real one does: no VM is booted."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from kata_shim.config.schema import AgentConfig, HypervisorConfig
from kata_shim.errors import DeadlineExceeded, Unavailable
from kata_shim.sandbox.base import SandboxSpec, create_sandbox
from kata_shim.sandbox.diagnostics import agent_silent, exit_text, tail, vm_exited
from kata_shim.sandbox.preflight import Origin

ORIGIN = Origin("/etc/kata/configuration.toml", "hypervisor.qemu")


def test_tail_keeps_the_last_lines_sanitised_and_capped(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    lines = [f"line {n}" for n in range(40)] + ["\x1b[31mred\x1b[0m\x07 bell", "x" * 1000, ""]
    log.write_text("\n".join(lines))
    got = tail(log, 3)
    assert got == ["line 39", "red bell", "x" * 240]
    assert tail(tmp_path / "absent") == []


def test_tail_shows_the_lead_up_to_a_kernel_panic_not_its_trace(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    trace = [f"[ 4.0] frame {n}" for n in range(20)]
    log.write_text("\n".join(["[ 3.9] VFS: cannot open root", "[ 4.0] Kernel panic - x", *trace]))
    assert tail(log, 2) == ["[ 3.9] VFS: cannot open root", "[ 4.0] Kernel panic - x"]


def test_exit_text() -> None:
    assert exit_text(1) == "exited with status 1"
    assert exit_text(-9) == "was killed by signal 9 (SIGKILL)"


def test_vm_exited_and_agent_silent_messages(tmp_path: Path) -> None:
    stderr, console = tmp_path / "qemu.log", tmp_path / "console.log"
    stderr.write_text("qemu-system-x86_64: Invalid SMP CPUs 1000\n")
    console.write_text("[ 0.1] Linux version 6.1\n[ 0.2] Run /init as init process\n")
    error = vm_exited("QEMU /q (pid 7)", 1, 0.25, (stderr, console), ORIGIN)
    assert isinstance(error, Unavailable)
    assert error.message.startswith("QEMU /q (pid 7) exited with status 1 0.2s after launch")
    assert "its stderr: qemu-system-x86_64: Invalid SMP CPUs 1000;" in error.message
    assert "[hypervisor.qemu] of /etc/kata/configuration.toml" in error.message
    assert error.message.endswith(
        "console:\n    [ 0.1] Linux version 6.1\n    [ 0.2] Run /init as init process"
    )
    event = vm_exited("QEMU", 0, 1, (stderr, console), ORIGIN, "SHUTDOWN (guest-reset)")
    assert "reported SHUTDOWN (guest-reset), so kata-shim ended it," in event.message
    silent = agent_silent(
        3, "virtio-serial port p", "QEMU runs", Origin("c.toml", "agent.kata"), console
    )
    assert isinstance(silent, DeadlineExceeded)
    assert "did not answer within 3s on virtio-serial port p; QEMU runs;" in silent.message
    assert "raise [agent.kata] dial_timeout in c.toml" in silent.message


FAKE_QEMU_REJECTS = """\
import sys
sys.stderr.write("qemu-system-x86_64: -smp 1000: Invalid SMP CPUs 1000\\n")
sys.exit(1)
"""

# Creates its QMP socket, drops the first client (the shim sees EOF), then fails:
# what QEMU does when it cannot load the kernel after the monitor is up.
FAKE_QEMU_QMP_EOF = """\
import socket, sys, time
path = next(a for a in sys.argv if a.startswith("unix:") and "qmp.sock" in a)
server = socket.socket(socket.AF_UNIX)
server.bind(path[5:].split(",")[0])
server.listen(1)
conn, _ = server.accept()
conn.close()
sys.stderr.write("qemu: could not load kernel '/k': No such file or directory\\n")
time.sleep(0.2)
sys.exit(1)
"""


def _fake_table(tmp_path: Path, script: str) -> dict[str, str]:
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text(f"#!{sys.executable}\n{script}")
    qemu.chmod(0o755)
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF")
    (tmp_path / "initrd.img").write_bytes(b"070701")
    return {
        "path": str(qemu),
        "kernel": str(tmp_path / "vmlinux"),
        "initrd": str(tmp_path / "initrd.img"),
        "accel": "tcg",
        "agent_channel": "virtio-serial",
    }


@pytest.mark.parametrize(
    ("script", "expected"),
    [(FAKE_QEMU_REJECTS, "Invalid SMP CPUs 1000"), (FAKE_QEMU_QMP_EOF, "could not load kernel")],
)
def test_a_failing_qemu_reports_its_exit_status_and_stderr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, script: str, expected: str
) -> None:
    state = tmp_path / "state"
    spec = SandboxSpec(
        "errfake",
        state,
        hypervisor=HypervisorConfig("qemu", _fake_table(tmp_path, script)),
        agent=AgentConfig(dial_timeout=10),
        config_source="/etc/kata/configuration.toml",
    )

    async def main() -> Unavailable:
        sandbox = create_sandbox(spec)
        try:
            with pytest.raises(Unavailable) as raised:
                await sandbox.start()
        finally:
            await sandbox.cleanup()
        return raised.value

    with caplog.at_level(logging.ERROR):
        error = asyncio.run(main())
    assert "exited with status 1" in error.message and expected in error.message
    assert "Error" not in error.message  # never a QMP ConnectError / EOFError
    assert not state.exists()
    assert any(
        "sandbox errfake: cannot start (UNAVAILABLE)" in r.getMessage() for r in caplog.records
    )
