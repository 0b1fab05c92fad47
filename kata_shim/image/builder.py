"""Build the guest image: `python -m kata_shim.image build [--out DIR] [--force]`.

Output (default /var/lib/kata/): `vmlinux-<kver>` (uncompressed ELF for PVH
direct boot), `kata-shim-initrd.img` (uncompressed newc cpio: busybox, kernel
modules, a minimal Python with kata_shim + protobuf + cffi, runc, /init), the
same tree as a shared read-only erofs root image `kata-shim-rootfs.img` with
its small loader initramfs `kata-shim-loader.img` (image/rootfs.py), and
`manifest.json` (versions, sizes, sha256, and the sha256 of all inputs).
Reproducible: the same inputs give byte-identical files. Rebuilds only when
the inputs fingerprint changes (or with --force). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kata_shim import __version__
from kata_shim.image import cpio, kernel, pytree, rootfs

__all__ = ["DEFAULT_OUT", "build", "main"]

DEFAULT_OUT = Path("/var/lib/kata")
INITRD_NAME = "kata-shim-initrd.img"
BUSYBOX = Path("/bin/busybox")
RUNC = Path("/usr/sbin/runc")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(set(files)):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _install_busybox(tree: Path) -> None:
    (tree / "bin").mkdir(parents=True)
    shutil.copyfile(BUSYBOX, tree / "bin/busybox")
    (tree / "bin/busybox").chmod(0o755)
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (tree / "bin" / applet).symlink_to("busybox")
    for sub in ("proc", "sys", "dev", "tmp", "run", "mnt", "root", "etc", "usr/bin", "sbin"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    (tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tree / "etc/group").write_text("root:x:0:\n")


def _install_modules(tree: Path, modules: list[Path]) -> list[str]:
    dest = tree / "lib/modules"
    dest.mkdir(parents=True)
    names = [kernel.install_module(path, dest) for path in modules]
    (tree / "modules.order").write_text("".join(f"{n}\n" for n in names))
    return names


def _install_init(tree: Path) -> None:
    init = tree / "init"
    init.write_text(resources.files("kata_shim.image").joinpath("init.sh").read_text())
    init.chmod(0o755)


def _write_initrd(tree: Path, target: Path) -> None:
    partial = target.with_suffix(".partial")
    with open(partial, "wb") as out:
        cpio.write_newc(tree, out)
    partial.replace(target)


def _tool_version(cmd: list[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return (
        (result.stdout or result.stderr).splitlines()[0].strip() if result.returncode == 0 else ""
    )


def _file_entry(path: Path) -> dict[str, Any]:
    return {"path": str(path), "size": path.stat().st_size, "sha256": sha256_file(path)}


def _up_to_date(manifest_path: Path, inputs: str) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("inputs_sha256") != inputs:
        return None
    for key in ("kernel", "initrd", "rootfs", "loader"):
        entry = manifest.get(key, {})
        path = Path(entry.get("path", "/nonexistent"))
        if not path.exists() or path.stat().st_size != entry.get("size"):
            return None
    if not (manifest_path.parent / "vmlinux").exists():
        return None
    return manifest


@dataclass(frozen=True)
class _Inputs:
    """What one build reads: the kernel, its modules, the Python tree, and their hash."""

    guest_kernel: kernel.Kernel
    modules: list[Path]
    loader_modules: list[Path]
    plan: pytree.PythonPlan
    sha256: str


def _inputs(kernel_version: str | None) -> _Inputs:
    guest_kernel = kernel.find_kernel(kernel_version)
    modules = kernel.module_paths(guest_kernel)
    loader_modules = kernel.module_paths(guest_kernel, rootfs.LOADER_MODULES)
    plan = pytree.plan_python(PACKAGE_ROOT, pytree.site_packages_of())
    scripts = [
        Path(str(resources.files("kata_shim.image").joinpath(name)))
        for name in ("init.sh", "loader.sh")
    ]
    sha = _fingerprint(
        [guest_kernel.vmlinuz, BUSYBOX, RUNC, *scripts, *modules, *pytree.input_files(plan)]
    )
    return _Inputs(guest_kernel, modules, loader_modules, plan, sha)


def _write_kernel(guest_kernel: kernel.Kernel, out_dir: Path, progress: Progress) -> Path:
    vmlinux = out_dir / f"vmlinux-{guest_kernel.version}"
    progress(f"extracting {vmlinux.name} from {guest_kernel.vmlinuz}")
    kernel.extract_vmlinux(guest_kernel.vmlinuz, vmlinux)
    stable = out_dir / "vmlinux"  # the name configuration.toml refers to
    stable.unlink(missing_ok=True)
    stable.symlink_to(vmlinux.name)
    return vmlinux


def _write_images(inputs: _Inputs, out_dir: Path, progress: Progress) -> list[str]:
    """The initramfs, the erofs root image and its loader; the module names loaded."""
    with tempfile.TemporaryDirectory(prefix="kata-image-") as scratch:
        tree = Path(scratch) / "root"
        progress("busybox")
        _install_busybox(tree)
        progress(f"{len(inputs.modules)} kernel modules")
        names = _install_modules(tree, inputs.modules)
        plan = inputs.plan
        progress(f"python ({len(plan.stdlib_files)} stdlib modules, {', '.join(plan.site_roots)})")
        pytree.install_python(plan, tree)
        progress("runc")
        pytree.install_binary(RUNC, tree, "usr/bin/runc")
        _install_init(tree)
        progress(f"writing {INITRD_NAME}")
        _write_initrd(tree, out_dir / INITRD_NAME)
        progress(f"writing {rootfs.ROOTFS_NAME} and {rootfs.LOADER_NAME}")
        rootfs.write_rootfs(tree, out_dir / rootfs.ROOTFS_NAME)
        loader = out_dir / rootfs.LOADER_NAME
        rootfs.write_loader(inputs.loader_modules, BUSYBOX, Path(scratch), loader)
    return names


def _manifest(inputs: _Inputs, vmlinux: Path, out_dir: Path, names: list[str]) -> dict[str, Any]:
    return {
        "format": 1,
        "inputs_sha256": inputs.sha256,
        "kernel": {**_file_entry(vmlinux), "version": inputs.guest_kernel.version},
        "initrd": _file_entry(out_dir / INITRD_NAME),
        "rootfs": {**_file_entry(out_dir / rootfs.ROOTFS_NAME), "type": "erofs"},
        "loader": _file_entry(out_dir / rootfs.LOADER_NAME),
        "modules": names,
        "components": {
            "kata_shim": __version__,
            "python": pytree.python_version(),
            "busybox": _tool_version([str(BUSYBOX)]).split(" (")[0],
            "runc": _tool_version([str(RUNC), "--version"]),
        },
    }


def build(
    out_dir: Path = DEFAULT_OUT,
    *,
    kernel_version: str | None = None,
    force: bool = False,
    progress: Progress = _stderr,
) -> dict[str, Any]:
    """Build (or reuse) the guest image in `out_dir`; return its manifest."""
    inputs = _inputs(kernel_version)
    manifest_path = out_dir / "manifest.json"
    if not force and (manifest := _up_to_date(manifest_path, inputs.sha256)) is not None:
        progress(f"image in {out_dir} is up to date (inputs {inputs.sha256[:12]})")
        return manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    vmlinux = _write_kernel(inputs.guest_kernel, out_dir, progress)
    names = _write_images(inputs, out_dir, progress)
    manifest = _manifest(inputs, vmlinux, out_dir, names)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    progress(
        f"done: {manifest['initrd']['size'] >> 20} MiB initrd, kernel {inputs.guest_kernel.version}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kata-shim image", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser(
        "build", help="build (or reuse) the guest kernel, initramfs and root image"
    )
    build_cmd.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    build_cmd.add_argument("--kernel", help="kernel version (default: newest with 9p)")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.out, kernel_version=args.kernel, force=args.force)
    except (kernel.KernelError, RuntimeError, OSError) as exc:
        print(f"kata-shim image: {exc}", file=sys.stderr)
        return 1
    keys = ("kernel", "initrd", "rootfs", "loader", "components")
    print(json.dumps({k: manifest[k] for k in keys}, indent=2))
    return 0
