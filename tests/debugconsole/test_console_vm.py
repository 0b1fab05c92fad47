"""`kata-shim exec` into a QEMU (TCG) sandbox started with debug_console_enabled.

A detached container runs in the VM through a private containerd; the exec
command's stdin is a pipe, so it types `uname -r; exit 5` into the guest
shell and returns the shell's status. The guest kernel (the image's, not the
host's) must answer. A second session gets a fresh shell, ended by the pipe's
EOF (the client types `exit`). The sandbox's management endpoint names its console.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.shim import KataRig
from kata_shim.metrics.endpoint import SOCKET_NAME
from kata_shim.metrics.http import get_unix
from tests.fakes.vmkeys import vm_keys
from tests.integration.test_shim_containerd import assert_clean, remove, wait_status
from tests.integration.test_vm_containerd import run_detached

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def console_rig(guest_image: Path) -> Iterator[KataRig]:
    keys = vm_keys(guest_image, initrd=True)
    with KataRig(hypervisor="qemu", hypervisor_keys=keys) as rig:
        text = rig.config.read_text()
        rig.config.write_text(
            text.replace("[hypervisor.qemu]\n", "[hypervisor.qemu]\ndebug_console_enabled = true\n")
        )
        yield rig


def kata_shim_exec(rig: KataRig, sandbox: str, typed: bytes) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "kata_shim.cli.exec_cmd", sandbox]
    return subprocess.run(
        [*argv, "--state-dir", str(rig.state_dir)], input=typed, capture_output=True, timeout=120
    )


def test_exec_reaches_the_guest_shell(console_rig: KataRig, guest_image: Path) -> None:
    rig = console_rig
    guest_kernel = json.loads((guest_image / "manifest.json").read_text())["kernel"]["version"]
    assert guest_kernel != os.uname().release
    task = rig.id("console")
    run_detached(rig, task)

    first = kata_shim_exec(rig, task, b"uname -r; exit 5\n")
    out = first.stdout.decode(errors="replace")
    print(f"--- kata-shim exec {task} <<< 'uname -r; exit 5' (status {first.returncode})")
    print(out)
    assert first.returncode == 5, out + first.stderr.decode(errors="replace")
    assert guest_kernel in out.replace("uname -r; exit 5", "")

    second = kata_shim_exec(rig, task, b"echo again-$((6*7))\n")
    out = second.stdout.decode(errors="replace")
    print(f"--- second session (status {second.returncode})\n{out}")
    assert second.returncode == 0 and "again-42" in out, out + second.stderr.decode()

    endpoint = str(rig.state_dir / task / SOCKET_NAME)
    _, info = asyncio.run(get_unix(endpoint, "/info"))
    described = json.loads(info)
    assert described["backend"] == "qemu" and described["state"] == "running"
    assert described["console"] == str(rig.state_dir / task / "console.sock")

    rig.ctr("task", "kill", "-s", "SIGKILL", task)
    wait_status(rig, task, "STOPPED", timeout=60)
    remove(rig, task)
    assert_clean(rig)
