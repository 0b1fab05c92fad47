"""Pre-launch checks (sandbox/preflight.py) on fake files, and docs/troubleshooting.md's shape."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kata_shim.errors import Code, FailedPrecondition, InvalidArgument
from kata_shim.sandbox.preflight import (
    Origin,
    accel_problem,
    binary_problem,
    image_problems,
    initrd_format_problem,
    kernel_version,
    launch_problems,
    qemu_config,
    shared_fs_problem,
)
from tests.integration.test_start_errors import FAULTS
from tests.troubleshooting import CTR_SUFFIX, entries

ORIGIN = Origin("/etc/kata-containers/configuration.toml", "hypervisor.qemu")
WHERE = "in /etc/kata-containers/configuration.toml"


def _elf_kernel(path: Path, release: str) -> Path:
    path.write_bytes(b"\x7fELF" + b"\0" * 4096 + f"Linux version {release} (x@y) #1 SMP".encode())
    return path


def _bzimage(path: Path, release: str) -> Path:
    data = bytearray(0x400)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x300 - 0x200).to_bytes(2, "little")
    text = f"{release} (builder@host) #1 SMP\0".encode()
    data[0x300 : 0x300 + len(text)] = text
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def image(tmp_path: Path) -> dict[str, str]:
    """A valid fake table: an executable 'QEMU', an ELF kernel, a cpio initrd + manifest."""
    qemu = tmp_path / "qemu"
    qemu.write_text("#!/bin/sh\n")
    qemu.chmod(0o755)
    kernel = _elf_kernel(tmp_path / "vmlinux", "6.1.0-9-amd64")
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"070701" + b"0" * 200)
    manifest = {
        "kernel": {"path": str(kernel), "version": "6.1.0-9-amd64"},
        "initrd": {"path": str(initrd), "size": initrd.stat().st_size},
        "modules": ["virtio.ko", "9p.ko"],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return {"path": str(qemu), "kernel": str(kernel), "initrd": str(initrd), "accel": "tcg"}


def test_every_fault_has_a_doc_entry_and_every_entry_a_fault() -> None:
    documented = entries()
    assert set(documented) == set(FAULTS)
    for entry in documented.values():
        assert entry.code in CTR_SUFFIX, entry
        assert entry.message  # prefix and class suffix are where containerd puts them


def test_doc_templates_match_messages_the_code_builds(image: dict[str, str]) -> None:
    documented = entries()
    missing_kernel = launch_problems({**image, "kernel": "/nonexistent/vmlinux"}, ORIGIN)
    assert documented["kernel-missing"].matches_message(missing_kernel[0].message)
    kvm = accel_problem({"accel": "kvm"}, ORIGIN, dev=Path("/nonexistent/kvm"))
    assert kvm is not None and documented["kvm-unusable"].matches_message(kvm.message)
    assert not documented["qemu-missing"].matches_message(missing_kernel[0].message)


def test_a_valid_table_has_no_problem(image: dict[str, str]) -> None:
    assert launch_problems(image, ORIGIN) == []


def test_missing_and_non_executable_qemu(image: dict[str, str], tmp_path: Path) -> None:
    missing = binary_problem(str(tmp_path / "nope"), ORIGIN)
    assert missing is not None and missing.code is Code.FAILED_PRECONDITION
    assert f"does not exist ([hypervisor.qemu] path {WHERE})" in missing.what
    assert "apt-get install qemu-system-x86" in missing.fix and "kata-shim check" in missing.fix
    os.chmod(image["path"], 0o644)
    not_exec = binary_problem(image["path"], ORIGIN)
    assert not_exec is not None and f"chmod 0755 {image['path']}" in not_exec.fix
    assert binary_problem(str(tmp_path), ORIGIN) is not None  # a directory


def test_every_missing_file_is_reported_with_its_key(image: dict[str, str]) -> None:
    table = {**image, "kernel": "/no/vmlinux", "initrd": "/no/initrd", "firmware": "/no/fw"}
    problems = launch_problems(table, ORIGIN)
    assert [p.what.split()[0] for p in problems] == ["kernel", "initrd", "firmware"]
    assert all(isinstance(p.error(), FailedPrecondition) for p in problems)
    assert "kata-shim image build" in problems[0].fix and "ovmf" in problems[2].fix


def test_defaults_are_checked_when_keys_are_unset() -> None:
    defaults = ("/var/lib/kata/vmlinux", "/var/lib/kata/kata-shim-rootfs.img")
    absent = [path for path in defaults if not os.path.exists(path)]
    if not absent:
        pytest.skip("a guest image is installed in /var/lib/kata on this host")
    problems = launch_problems({"path": "/bin/sh", "accel": "tcg"}, ORIGIN)
    assert [p.what.split()[1] for p in problems] == absent
    assert all(
        "kernel (not set: the default) in" in p.what or "image (not" in p.what for p in problems
    )


@pytest.mark.parametrize(
    "head",
    [b"070701", b"070702", b"\x1f\x8b\x08", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"BZh9"],
)
def test_initrd_formats_the_kernel_unpacks(tmp_path: Path, head: bytes) -> None:
    initrd = tmp_path / "i"
    initrd.write_bytes(head + b"\0" * 64)
    assert initrd_format_problem(str(initrd), ORIGIN) is None


def test_random_bytes_are_not_an_initramfs(tmp_path: Path) -> None:
    initrd = tmp_path / "i"
    initrd.write_bytes(b"\x00\x11\x22\x33\x44\x55\x66\x77" + os.urandom(64))
    problem = initrd_format_problem(str(initrd), ORIGIN)
    assert problem is not None and "starts with 0011223344556677" in problem.what


def test_kernel_version_from_elf_banner_and_bzimage_header(tmp_path: Path) -> None:
    assert kernel_version(str(_elf_kernel(tmp_path / "a", "6.1.0-57-amd64"))) == "6.1.0-57-amd64"
    assert kernel_version(str(_bzimage(tmp_path / "b", "5.10.0-28-amd64"))) == "5.10.0-28-amd64"
    (tmp_path / "c").write_bytes(b"nothing here")
    assert kernel_version(str(tmp_path / "c")) is None
    assert kernel_version(str(tmp_path / "missing")) is None


def test_image_built_for_another_kernel(image: dict[str, str], tmp_path: Path) -> None:
    other = _bzimage(tmp_path / "vmlinuz-5.10", "5.10.0-28-amd64")
    (problem,) = image_problems(str(other), image["initrd"], "virtio-9p", ORIGIN)
    assert "was built for kernel 6.1.0-9-amd64" in problem.what
    assert f"is 5.10.0-28-amd64 ([hypervisor.qemu] kernel {WHERE})" in problem.what
    assert f"set kernel to {image['kernel']}" in problem.fix and "--force" in problem.fix


def test_initrd_changed_after_build_and_image_without_9p(
    image: dict[str, str], tmp_path: Path
) -> None:
    with open(image["initrd"], "ab") as handle:
        handle.write(b"x")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["modules"] = ["virtio.ko"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    problems = image_problems(image["kernel"], image["initrd"], "virtio-9p", ORIGIN)
    assert len(problems) == 2, problems
    assert "changed or damaged" in problems[0].what and "no 9p module" in problems[1].what
    assert len(image_problems(image["kernel"], image["initrd"], "none", ORIGIN)) == 1


def test_a_manifest_for_another_initrd_is_ignored(image: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    copy = elsewhere / "initrd.img"
    copy.write_bytes(b"070701")
    (elsewhere / "manifest.json").write_text(json.dumps({"initrd": {"path": "/other"}}))
    assert image_problems(image["kernel"], str(copy), "virtio-9p", ORIGIN) == []


def test_accel(tmp_path: Path) -> None:
    (tmp_path / "kvm").write_text("")
    (tmp_path / "sys").mkdir()
    assert accel_problem({"accel": "kvm"}, ORIGIN, tmp_path / "kvm", tmp_path / "sys") is None
    (tmp_path / "sys" / "kvm_pvm").mkdir()
    pvm = accel_problem({"accel": "kvm"}, ORIGIN, tmp_path / "kvm", tmp_path / "sys")
    assert pvm is not None and "PVM host" in pvm.what and 'accel = "auto"' in pvm.fix
    assert accel_problem({"accel": "auto"}, ORIGIN, tmp_path / "kvm", tmp_path / "sys") is None
    bogus = accel_problem({"accel": "hvf"}, ORIGIN)
    assert bogus is not None and bogus.code is Code.INVALID_ARGUMENT


def test_shared_fs_and_config_values_are_invalid_arguments() -> None:
    problem = shared_fs_problem({"shared_fs": "virtio-fs-nydus"}, ORIGIN)
    assert problem is not None and isinstance(problem.error(), InvalidArgument)
    assert entries()["shared-fs-unavailable"].matches_message(problem.error().message)
    assert shared_fs_problem({"shared_fs": "none"}, ORIGIN) is None
    assert shared_fs_problem({"shared_fs": "virtio-fs"}, ORIGIN) is None
    libvirt = Origin(ORIGIN.source, "hypervisor.libvirt")
    refused = shared_fs_problem({"shared_fs": "virtio-fs"}, libvirt)
    assert refused is not None and "over virtio-9p only" in refused.message
    with pytest.raises(InvalidArgument, match=r"shared_fs = 'virtio-fs-nydus' is not available"):
        qemu_config({"shared_fs": "virtio-fs-nydus"}, ORIGIN)
    with pytest.raises(
        InvalidArgument, match=rf"machine_type 'virt'.*\(\[hypervisor.qemu\] {WHERE}"
    ):
        qemu_config({"machine_type": "virt"}, ORIGIN)


def test_virtio_fs_needs_an_executable_virtiofsd(image: dict[str, str], tmp_path: Path) -> None:
    table = {**image, "shared_fs": "virtio-fs", "virtio_fs_daemon": str(tmp_path / "none")}
    problems = launch_problems(table, ORIGIN)
    assert len(problems) == 1 and "virtio_fs_daemon" in problems[0].message
    assert "install virtiofsd" in problems[0].fix
