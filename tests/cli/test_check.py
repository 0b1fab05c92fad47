"""`kata-shim check`: each probe's verdict against a fake host, and the exit status."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kata_shim import __version__
from kata_shim.cli import check
from kata_shim.cli.check import Host, Result, render
from kata_shim.config.schema import build_config

pytestmark = pytest.mark.timeout(30)


def _tool(path: Path, line: str) -> str:
    path.write_text(f"#!/bin/sh\necho '{line}'\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A healthy fake host: KVM usable, vhost-vsock, 9p kernel, tools, image."""
    for name in ("dev", "sys", "boot", "bin", "img", "lib"):
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "dev/kvm").write_text("")
    (tmp_path / "dev/vhost-vsock").write_text("")
    qemu = _tool(tmp_path / "bin/qemu", "QEMU emulator version 9.9.9")
    tools = {
        "runc": _tool(tmp_path / "bin/runc", "runc version 1.1.5"),
        "containerd": _tool(tmp_path / "bin/containerd", "containerd x 1.7.2 abc"),
    }
    (tmp_path / "img/vmlinux").write_text("k")
    (tmp_path / "img/initrd.img").write_text("070701")  # a newc cpio starts so
    manifest = {"kernel": {"version": "6.1.0-9"}, "components": {"kata_shim": __version__}}
    (tmp_path / "img/manifest.json").write_text(json.dumps(manifest))
    table = {
        "path": qemu,
        "kernel": f"{tmp_path}/img/vmlinux",
        "initrd": f"{tmp_path}/img/initrd.img",
    }
    config = build_config("test.toml", {"hypervisor": {"qemu": table}})
    return Host(
        config,
        "test",
        dev=tmp_path / "dev",
        sys_module=tmp_path / "sys",
        boot=tmp_path / "boot",
        image_dir=tmp_path / "img",
        which=tools.get,
    )


@pytest.fixture(autouse=True)
def _kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """find_kernel looks at /lib/modules; give it a fake kernel with 9p under tmp."""
    real = check.find_kernel

    def fake(version: str | None, boot: Path) -> object:
        if not any(boot.glob("vmlinuz-*")):
            return real(version, boot)
        return type("K", (), {"version": "6.1.0-9", "vmlinuz": boot / "vmlinuz-6.1.0-9"})()

    monkeypatch.setattr(check, "find_kernel", fake)
    (tmp_path / "boot").mkdir(exist_ok=True)


def _by_name(results: list[Result]) -> dict[str, Result]:
    return {result.name: result for result in results}


def test_a_healthy_host_is_ready(host: Host) -> None:
    (host.boot / "vmlinuz-6.1.0-9").write_text("")
    results = check.run_checks(host)
    assert {r.status for r in results} == {"PASS"}, render(results)[0]
    report, status = render(results)
    assert status == 0 and report.endswith("ready (0 warning(s))\n")
    assert "QEMU emulator version 9.9.9" in report and "runc version 1.1.5" in report


def test_pvm_kvm_and_no_vhost_vsock_only_warn(host: Host) -> None:
    (host.boot / "vmlinuz-6.1.0-9").write_text("")
    (host.sys_module / "kvm_pvm").mkdir()
    os.unlink(host.dev / "vhost-vsock")
    results = _by_name(check.run_checks(host))
    assert results["accelerator"].status == "WARN" and "PVM" in results["accelerator"].detail
    assert results["vhost-vsock"].status == "WARN"
    assert "modprobe vhost_vsock" in results["vhost-vsock"].fix
    report, status = render(list(results.values()))
    assert status == 0 and "fix: modprobe vhost_vsock" in report


def test_missing_pieces_fail_with_their_fix(host: Host) -> None:
    os.unlink(host.image_dir / "initrd.img")
    host.which = {}.get  # no runc, no containerd
    results = _by_name(check.run_checks(host))
    assert results["guest kernel"].status == "FAIL"
    assert "linux-image-amd64" in results["guest kernel"].fix
    assert results["runc"].status == "FAIL" and "runc" in results["runc"].fix
    assert "kata-shim image build" in results["guest image"].fix
    assert results["containerd"].status == "WARN"  # iSulad hosts have none
    report, status = render(list(results.values()))
    assert status == 1
    assert report.splitlines()[-1] == (
        "not ready: 3 required check(s) failed: guest kernel, runc, guest image"
    )


def test_old_containerd_and_stale_image(host: Host, tmp_path: Path) -> None:
    host.which = {"containerd": _tool(tmp_path / "bin/c2", "containerd x 1.5.9 x")}.get
    manifest = json.loads((host.image_dir / "manifest.json").read_text())
    manifest["components"]["kata_shim"] = "0.0.1"
    (host.image_dir / "manifest.json").write_text(json.dumps(manifest))
    results = _by_name(check.run_checks(host))
    assert results["containerd"].status == "FAIL" and ">= 1.6" in results["containerd"].fix
    assert results["guest image"].status == "WARN" and "--force" in results["guest image"].fix


def test_local_backend_needs_no_qemu_or_image(host: Host) -> None:
    host.config = build_config("local.toml", {"hypervisor": {"local": {}}})
    results = _by_name(check.run_checks(host))
    assert results["guest image"].status == "PASS"
    assert not results["qemu"].required or results["qemu"].status == "PASS"
