"""Sandbox start failures as a user meets them: `ctr run` through a private containerd.

One parametrised test injects each fault (docs/troubleshooting.md has one
entry per fault id) and asserts: what `ctr` prints, matched in full against
the entry's template (which fixes the code class containerd appends); the
shim's error log line with the sandbox id and the same message; and that
nothing is left: no QEMU or shim process, no shim socket, no mount, no
sandbox state dir, no network device or namespace named after the test.
Most faults fail before a VM is launched; `guest-panics`, `agent-silent` and
`vm-killed` boot one (TCG).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kata_shim.devenv.shim import KataRig
from kata_shim.sandbox.qemu.accel import kvm_unusable_reason
from tests.troubleshooting import CTR_PREFIX, CTR_SUFFIX, entries

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

Keys = Callable[[Path, Path], dict[str, Any]]  # (scratch dir, guest image dir) → keys


def _image(image: Path) -> dict[str, Any]:
    return {"kernel": str(image / "vmlinux"), "initrd": str(image / "kata-shim-initrd.img")}


def _not_executable(work: Path, image: Path) -> dict[str, Any]:
    qemu = work / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\nexit 0\n")
    qemu.chmod(0o644)
    return {**_image(image), "path": str(qemu)}


def _corrupt_initrd(work: Path, image: Path) -> dict[str, Any]:
    initrd = work / "kata-shim-initrd.img"
    initrd.write_bytes(os.urandom(1 << 20))
    return {**_image(image), "initrd": str(initrd)}


def _image_for_other_kernel(work: Path, image: Path) -> dict[str, Any]:
    """A guest image whose manifest says it was built for another kernel release."""
    other = work / "image"
    other.mkdir()
    (other / "kata-shim-initrd.img").symlink_to(image / "kata-shim-initrd.img")
    manifest = json.loads((image / "manifest.json").read_text())
    manifest["kernel"].update(version="5.10.0-28-amd64", path=str(other / "vmlinux-5.10.0-28"))
    (other / "manifest.json").write_text(json.dumps(manifest))
    return {**_image(image), "initrd": str(other / "kata-shim-initrd.img")}


def _kill_qemu(rig: KataRig) -> None:
    """Kill QEMU once the guest kernel has printed something, before the agent answers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        qemus = [pid for pid, argv in rig.leftovers() if "qemu-system" in argv]
        consoles = list(rig.state_dir.glob("*/console.log"))
        if qemus and consoles and consoles[0].read_bytes().count(b"\n") >= 5:
            os.kill(qemus[0], signal.SIGKILL)
            return
        time.sleep(0.02)


@dataclass(frozen=True)
class Fault:
    keys: Keys
    backend: str = "qemu"
    dial_timeout: int = 120
    during: Callable[[KataRig], None] | None = None
    boots: bool = False


FAULTS: dict[str, Fault] = {
    "qemu-missing": Fault(lambda w, i: {**_image(i), "path": str(w / "no-such-qemu")}),
    "qemu-not-executable": Fault(_not_executable),
    "kernel-missing": Fault(lambda w, i: {**_image(i), "kernel": str(w / "no-vmlinux")}),
    "initrd-missing": Fault(lambda w, i: {**_image(i), "initrd": str(w / "no-initrd.img")}),
    "initrd-corrupt": Fault(_corrupt_initrd),
    "image-other-kernel": Fault(_image_for_other_kernel),
    "kvm-unusable": Fault(lambda w, i: {**_image(i), "accel": "kvm"}),
    "shared-fs-unavailable": Fault(lambda w, i: {**_image(i), "shared_fs": "virtio-fs-nydus"}),
    "machine-type-invalid": Fault(lambda w, i: {**_image(i), "machine_type": "virt"}),
    "qemu-rejects-option": Fault(lambda w, i: {**_image(i), "default_vcpus": 1000}),
    "guest-panics": Fault(
        lambda w, i: {**_image(i), "kernel_params": "rdinit=/nonexistent"}, boots=True
    ),
    "agent-silent": Fault(
        lambda w, i: {**_image(i), "enable_debug": True}, dial_timeout=3, boots=True
    ),
    "vm-killed": Fault(
        lambda w, i: {**_image(i), "enable_debug": True}, during=_kill_qemu, boots=True
    ),
    "libvirtd-not-running": Fault(
        lambda w, i: {**_image(i), "uri": f"qemu:///system?socket={w}/no-libvirt-sock"},
        backend="libvirt",
    ),
}


def _toml(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_configuration(
    config: Path, state_dir: Path, fault: Fault, keys: Mapping[str, Any]
) -> None:
    """A rig's configuration.toml (its KATA_CONF_FILE) for one fault."""
    lines = [f"[hypervisor.{fault.backend}]"]
    lines += [f"{key} = {_toml(value)}" for key, value in keys.items()]
    lines += ["", "[agent.kata]", f"dial_timeout = {fault.dial_timeout}"]
    lines += ["", "[runtime]", f"state_dir = {_toml(str(state_dir))}", ""]
    config.write_text("\n".join(lines))


@pytest.fixture
def rig() -> Iterator[KataRig]:
    with KataRig(hypervisor="qemu") as rig:
        yield rig


def run_failing(rig: KataRig, fault: Fault, task: str) -> subprocess.CompletedProcess[bytes]:
    helper = None
    if fault.during is not None:
        helper = threading.Thread(target=fault.during, args=(rig,), daemon=True)
        helper.start()
    result = rig.ctr(*rig.run_args(task, rig.sh("true"), "--rm"), timeout=180)
    if helper is not None:
        helper.join(60)
    return result


def leftovers(rig: KataRig, task: str) -> dict[str, object]:
    """Everything of this test still on the host (empty when clean)."""
    found: dict[str, object] = {"processes": rig.wait_clean(timeout=20)}
    found["sockets"] = rig.sockets()
    mountinfo = Path("/proc/self/mountinfo").read_text()
    found["mounts"] = [line for line in mountinfo.splitlines() if str(rig.work) in line]
    states = rig.state_dir
    found["state dirs"] = sorted(os.listdir(states)) if states.exists() else []
    found["net devices"] = [n for n in os.listdir("/sys/class/net") if rig.marker in n]
    netns = Path("/run/netns")
    found["netns"] = [n for n in os.listdir(netns) if rig.marker in n] if netns.exists() else []
    return {what: items for what, items in found.items() if items}


@pytest.mark.parametrize(
    "fault_id",
    [pytest.param(f, marks=[pytest.mark.slow] if FAULTS[f].boots else []) for f in FAULTS],
)
def test_start_failure_is_explained_and_leaves_nothing(
    rig: KataRig, guest_image: Path, fault_id: str
) -> None:
    fault = FAULTS[fault_id]
    if fault_id == "kvm-unusable" and kvm_unusable_reason() is None:
        pytest.skip("KVM is usable on this host: the fault cannot be injected here")
    entry = entries()[fault_id]
    write_configuration(rig.config, rig.state_dir, fault, fault.keys(rig.work, guest_image))
    task = rig.id(fault_id.replace("-", ""))
    result = run_failing(rig, fault, task)
    printed = result.stderr.decode(errors="replace").strip()
    print(f"[{fault_id}] ctr exit {result.returncode}:\n{printed}")
    assert result.returncode != 0
    assert entry.matches_ctr(printed), f"ctr printed:\n{printed}\n\ndoc template:\n{entry.ctr}"
    message = printed.removeprefix(CTR_PREFIX).removesuffix(f": {CTR_SUFFIX[entry.code]}")
    first_line = message.splitlines()[0]
    log = rig.containerd.log_path.read_text(errors="replace")
    logged = f"sandbox {task}: cannot start ({code_name(entry.code)}): {first_line}"
    assert any(logged in line and " ERROR " in line for line in log.splitlines()), (
        f"no error log line {logged!r} in:\n{rig.containerd.log_tail()}"
    )
    assert not leftovers(rig, task), leftovers(rig, task)


def code_name(code: str) -> str:
    """FailedPrecondition → FAILED_PRECONDITION (kata_shim.errors.Code names)."""
    return "".join(f"_{c}" if c.isupper() else c.upper() for c in code).lstrip("_")
