"""The README's main job: `scripts/dev.sh demo` → `python -m kata_shim.demo`.

Starts a private containerd 1.6, puts `containerd-shim-kata-v2` (this checkout)
on its PATH and runs a busybox container through it:
`ctr run --rm --runtime io.containerd.kata.v2 ... /bin/sh -c '...'`.
By default the shim uses its embedded default configuration: the container
runs in a QEMU VM (TCG on hosts without usable KVM) booted from the guest image
in /var/lib/kata, which is built first if missing or stale; the output (guest
kernel release, QEMU's CPU model) proves where it ran. `--local` uses the
`local` sandbox instead (agent on the host, no VM). containerd is stopped by
PID and its scratch directory removed, also on failure.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kata_shim.config import EMBEDDED_CONFIG
from kata_shim.devenv.shim import KataContainerd, install_shim
from kata_shim.devenv.specs import shared_rootfs

DEFAULT_IMAGE_DIR = Path("/var/lib/kata")
SCRIPT = "echo hello from kata-shim; uname -r; grep -m1 'model name' /proc/cpuinfo"


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def vm_config(work: Path, image_dir: Path) -> Path:
    """The embedded default (QEMU, /var/lib/kata image), or one for another image dir."""
    from kata_shim.image.builder import build

    say(f"guest image: {image_dir} (built if missing or stale)")
    build(image_dir)
    if image_dir == DEFAULT_IMAGE_DIR:
        return EMBEDDED_CONFIG
    config = work / "configuration.toml"
    config.write_text(
        "[hypervisor.qemu]\n"
        f'kernel = "{image_dir}/vmlinux"\n'
        f'initrd = "{image_dir}/kata-shim-initrd.img"\n'
        'machine_type = "microvm"\naccel = "auto"\ndefault_memory = 512\n\n'
        "[agent.kata]\ndial_timeout = 120\n"
    )
    return config


def local_config(work: Path) -> Path:
    config = work / "configuration.toml"
    config.write_text("[hypervisor.local]\n")
    return config


def run(vm: bool, image_dir: Path, keep: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="ksdemo-", dir="/tmp"))
    config = vm_config(work, image_dir) if vm else local_config(work)
    say(f"shim configuration: {config}")
    env = {"KATA_CONF_FILE": str(config)}  # also when /etc/kata-containers has one
    ctd = KataContainerd(str(work / "ctd"), env=env)
    say(f"starting a private containerd under {ctd.work}")
    try:
        ctd.start()
        install_shim(ctd.bin_dir)
        say(f"containerd pid {ctd.pid}; runtime io.containerd.kata.v2 → {ctd.bin_dir}")
        mode = "a QEMU VM (guest image)" if vm else "the local sandbox (no VM)"
        say(f"ctr run --rm --runtime io.containerd.kata.v2 busybox: {SCRIPT!r} in {mode}")
        started = time.monotonic()
        result = ctd.ctr(
            "run", "--rm", "--runtime", "io.containerd.kata.v2", "--fifo-dir", str(ctd.fifo_dir),
            "--rootfs", "--env", "PATH=/bin:/usr/bin", str(shared_rootfs()),
            "kata-shim-demo", "/bin/sh", "-c", SCRIPT, timeout=300, check=False,
        )  # fmt: skip
        for line in result.stdout.decode(errors="replace").splitlines():
            print(f"    {line}")
        if result.returncode != 0:
            error = result.stderr.decode(errors="replace").strip()
            say(f"ctr failed ({result.returncode}): {error}")
            return result.returncode or 1
        say(f"container exited 0 after {time.monotonic() - started:.2f} s")
        return 0
    finally:
        ctd.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        say("containerd stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kata-shim-demo", description=__doc__)
    parser.add_argument(
        "--local", action="store_true", help="use the local sandbox (no VM) instead of QEMU"
    )
    parser.add_argument("--vm", action="store_true", help="the default; kept for old scripts")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    return run(not args.local, args.image_dir, args.keep)


if __name__ == "__main__":
    sys.exit(main())
