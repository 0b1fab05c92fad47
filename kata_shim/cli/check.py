"""`kata-shim check`: is this host ready to run VM sandboxes?

One line per check: PASS / WARN / FAIL, what was found, and for anything but
PASS the fix. Required checks (configuration, qemu, guest kernel, runc,
guest image, shared fs, containerd when installed, and the accelerator when
`accel = "kvm"`) decide the exit status; WARN lines
(KVM unusable → TCG, no /dev/vhost-vsock → virtio-serial) never do. Probes
are passive: files are stat()ed, tools run with --version; /dev/vsock and
/dev/kvm are never opened. The VM checks are the shim's own pre-launch
checks (sandbox/preflight.py), so `check` and a failing Create agree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kata_shim import __version__
from kata_shim.config.schema import Config
from kata_shim.image.builder import DEFAULT_OUT
from kata_shim.image.kernel import KernelError, find_kernel
from kata_shim.sandbox.preflight import (
    Origin,
    Problem,
    accel_problem,
    binary_problem,
    configured_path,
    daemon_problem,
    file_problem,
    image_problems,
    initrd_format_problem,
    shared_fs_problem,
)
from kata_shim.sandbox.qemu.accel import kvm_unusable_reason
from kata_shim.sandbox.rootimage import boot_files, root_image_problem

__all__ = ["Host", "Result", "render", "run_checks"]

DEFAULT_QEMU = "/usr/bin/qemu-system-x86_64"
MIN_CONTAINERD = (1, 6)
VM_BACKENDS = ("qemu", "libvirt")


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    status: str  # PASS, WARN or FAIL
    detail: str
    fix: str = ""
    required: bool = True

    @property
    def failed(self) -> bool:
        return self.required and self.status == "FAIL"


@dataclass(slots=True)
class Host:
    """What the checks look at (tests point these elsewhere)."""

    config: Config
    config_reason: str
    dev: Path = Path("/dev")
    sys_module: Path = Path("/sys/module")
    boot: Path = Path("/boot")
    image_dir: Path = DEFAULT_OUT
    which: Callable[[str], str | None] = field(default=lambda name: _which(name))

    @property
    def vm(self) -> bool:
        return self.config.hypervisor.type in VM_BACKENDS

    @property
    def origin(self) -> Origin:
        return Origin(self.config.source, f"hypervisor.{self.config.hypervisor.type}")


def _failed(name: str, problem: Problem, required: bool = True) -> Result:
    return Result(name, "FAIL", problem.what, problem.fix, required)


def _which(name: str) -> str | None:
    """shutil.which on $PATH plus the sbin directories (runc lives in /usr/sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else f"(exit status {done.returncode})"


def check_config(host: Host) -> Result:
    detail = (
        f"{host.config.source} ({host.config_reason}), hypervisor {host.config.hypervisor.type}"
    )
    if host.config.warnings:
        return Result("config", "WARN", f"{detail}; {host.config.warnings[0]}", "fix the key")
    return Result("config", "PASS", detail)


def check_qemu(host: Host) -> Result:
    table = host.config.hypervisor.table
    path = str(table.get("path", DEFAULT_QEMU)) if host.vm else DEFAULT_QEMU
    if (problem := binary_problem(path, host.origin, unset=not table.get("path"))) is not None:
        return _failed("qemu", problem, host.vm)
    return Result("qemu", "PASS", f"{path}: {_first_line([path, '--version'])}")


def check_accel(host: Host) -> Result:
    table = host.config.hypervisor.table
    if host.vm and (
        problem := accel_problem(table, host.origin, host.dev / "kvm", host.sys_module)
    ):
        return _failed("accelerator", problem)
    reason = kvm_unusable_reason(host.dev / "kvm", host.sys_module)
    if reason is None:
        return Result("accelerator", "PASS", "KVM usable", required=False)
    return Result(
        "accelerator",
        "WARN",
        f"KVM unusable ({reason}); accel=auto uses TCG software emulation (slow boots)",
        "run on a host with a usable, non-PVM /dev/kvm for fast VMs; TCG works meanwhile",
        required=False,
    )


def check_vhost_vsock(host: Host) -> Result:
    path = host.dev / "vhost-vsock"
    if path.exists():
        return Result("vhost-vsock", "PASS", f"{path} present", required=False)
    return Result(
        "vhost-vsock",
        "WARN",
        f"{path} absent: the agent channel falls back to virtio-serial",
        "modprobe vhost_vsock (optional)",
        required=False,
    )


def check_kernel(host: Host) -> Result:
    try:
        kernel = find_kernel(None, host.boot)
    except KernelError as exc:
        return Result("guest kernel", "FAIL", str(exc).split(":")[0], str(exc).split(": ")[-1])
    return Result("guest kernel", "PASS", f"{kernel.version} ({kernel.vmlinuz}, has 9p modules)")


def check_runc(host: Host) -> Result:
    path = host.which("runc")
    if not path:
        return Result(
            "runc", "FAIL", "runc not found", "apt-get install -y runc (dnf install runc)"
        )
    return Result("runc", "PASS", f"{path}: {_first_line([path, '--version'])}")


def check_containerd(host: Host) -> Result:
    path = host.which("containerd")
    if not path:
        fix = "apt-get install -y containerd, or use iSulad with lib-shim-v2"
        return Result("containerd", "WARN", "containerd not installed", fix, required=False)
    line = _first_line([path, "--version"])
    match = re.search(r"\sv?(\d+)\.(\d+)", line)
    if match and (int(match[1]), int(match[2])) < MIN_CONTAINERD:
        wanted = ".".join(map(str, MIN_CONTAINERD))
        return Result("containerd", "FAIL", line, f"upgrade containerd to >= {wanted}")
    return Result("containerd", "PASS", line)


def _boot_problems(host: Host) -> tuple[list[Problem | None], str]:
    """Problems with the kernel and the root image (or initrd); the image or initrd path."""
    table = host.config.hypervisor.table
    kernel = configured_path(table, "kernel")
    problems = [file_problem(kernel, "kernel", host.origin, unset=not table.get("kernel"))]
    image, _ = boot_files(table)
    if image:  # the shared read-only root image (sandbox/rootimage.py)
        if (reason := root_image_problem(image)) is not None:
            where = host.origin.key("image", unset=not table.get("image"))
            problems.append(Problem(f"{reason[0]} ({where})", reason[1]))
        return problems, image
    initrd = configured_path(table, "initrd")
    problems.append(file_problem(initrd, "initrd", host.origin, unset=not table.get("initrd")))
    if not any(problems):
        problems = [initrd_format_problem(initrd, host.origin)]
    if not any(problems):
        shared = str(table.get("shared_fs", "virtio-9p"))
        problems = list(image_problems(kernel, initrd, shared, host.origin))
    return problems, initrd


def check_image(host: Host) -> Result:
    if not host.vm:
        return Result("guest image", "PASS", "not needed by the local backend")
    problems, boot_file = _boot_problems(host)
    if found := [problem for problem in problems if problem is not None]:
        return _failed("guest image", found[0])
    manifest_path = Path(boot_file).parent / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        built_by = manifest["components"]["kata_shim"]
        kernel = manifest["kernel"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return Result(
            "guest image", "WARN", f"{manifest_path} missing or unreadable", "kata-shim image build"
        )
    detail = f"{manifest_path.parent}: kernel {kernel}, built by kata-shim {built_by}"
    if built_by != __version__:
        return Result(
            "guest image", "WARN", detail, "kata-shim image build --force (version changed)"
        )
    return Result("guest image", "PASS", detail)


def check_shared_fs(host: Host) -> Result:
    if not host.vm:
        return Result("shared fs", "PASS", "not needed by the local backend")
    if (problem := shared_fs_problem(host.config.hypervisor.table, host.origin)) is not None:
        return _failed("shared fs", problem)
    if (problem := daemon_problem(host.config.hypervisor.table, host.origin)) is not None:
        return _failed("shared fs", problem)  # virtio-fs without an executable virtiofsd
    return Result(
        "shared fs", "PASS", str(host.config.hypervisor.table.get("shared_fs", "virtio-9p"))
    )


CHECKS: tuple[Callable[[Host], Result], ...] = (
    check_config,
    check_qemu,
    check_accel,
    check_vhost_vsock,
    check_kernel,
    check_runc,
    check_containerd,
    check_image,
    check_shared_fs,
)


def run_checks(host: Host) -> list[Result]:
    return [check(host) for check in CHECKS]


def render(results: list[Result]) -> tuple[str, int]:
    """The report and the exit status (1 when a required check failed)."""
    lines = []
    for result in results:
        lines.append(f"{result.status:<4}  {result.name:<13} {result.detail}")
        if result.fix and result.status != "PASS":
            lines.append(f"{'':19} fix: {result.fix}")
    failed = [r.name for r in results if r.failed]
    warned = sum(r.status == "WARN" for r in results)
    if failed:
        lines.append(f"not ready: {len(failed)} required check(s) failed: {', '.join(failed)}")
    else:
        lines.append(f"ready ({warned} warning(s))")
    return "\n".join(lines) + "\n", 1 if failed else 0
