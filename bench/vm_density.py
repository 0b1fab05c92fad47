"""VM pod density: host memory per idle VM pod, and boot time, per guest design.

For each design (--designs, default `initrd,image`: the previous initramfs boot
and the shared read-only root image) on one private containerd:
  N idle pods (`ctr run -d … sleep`, default 10), then per pod (medians):
    qemu_pss_kb / qemu_pss_anon_kb / qemu_pss_file_kb / qemu_pss_shmem_kb
                        QEMU's /proc/<pid>/smaps_rollup
    virtiofsd_pss_kb    the sandbox's virtiofsd (0 with 9p)
    shim_pss_kb         the shim daemon
    pod_pss_kb          QEMU + virtiofsd + shim
    guest_used_kb       MemTotal - MemAvailable from the guest's /proc/meminfo
  host_mem_available_kb before/after the N pods, and the drop per pod;
  create_to_first_output_s  `ctr run --rm … echo` start → first stdout byte;
  bare_kernel_to_init_s     the same QEMU flags, `kata_shim.run=marker`.
File IO in a container, per shared fs (--io, default `virtio-9p,virtio-fs`; the
image design, one sandbox each, confined as shipped; bench/share_io.py's run):
  write_mb_s / read_mb_s    `dd` of --io-mib MiB on a host volume (fsync on write)
  chmod_files_s / chown_files_s  over --io-files files in one volume directory
  tar_x_s                   `tar -x` + `sync` of --io-files small files into the rootfs
  (medians over --io-runs sandboxes)
Side by side: containerd-shim-runc-v2 pods on the same containerd (shim PSS,
create → first output). `uptime`'s load average is recorded (TCG is CPU bound).
Run: `.venv/bin/python bench/vm_density.py [--pods 10] [--designs initrd,image]
[--image DIR] [--io virtio-9p,virtio-fs|""] [--io-mib 256] [--io-files 2000]
[--io-runs 1]`
(builds the image if needed).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from share_io import measure as measure_io
from vm_boot import bare_boot

from kata_shim.devenv.shim import RUNTIME as KATA
from kata_shim.devenv.shim import KataRig
from kata_shim.image.builder import build
from kata_shim.sandbox.qemu.cmdline import QemuConfig

RUNC = "io.containerd.runc.v2"
SMAPS_KEYS = {"Pss": "pss", "Pss_Anon": "anon", "Pss_File": "file", "Pss_Shmem": "shmem"}


def design_keys(image: Path, design: str) -> dict[str, Any]:
    keys: dict[str, Any] = {"kernel": str(image / "vmlinux"), "accel": "auto"}
    if design == "initrd":
        keys |= {"initrd": str(image / "kata-shim-initrd.img"), "image": ""}
    elif design == "image":
        keys |= {"image": str(image / "kata-shim-rootfs.img"), "initrd": ""}
    else:
        raise SystemExit(f"unknown design {design!r}: use initrd or image")
    return keys


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else json.dumps(str(value))


def write_config(rig: KataRig, keys: dict[str, Any]) -> None:
    table = "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
    rig.config.write_text(
        f"[hypervisor.qemu]\n{table}\n[agent.kata]\ndial_timeout = 300\n\n"
        f'[runtime]\nstate_dir = "{rig.state_dir}"\n'
    )


def smaps(pid: int) -> dict[str, int]:
    values = dict.fromkeys(SMAPS_KEYS.values(), 0)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in SMAPS_KEYS:
            values[SMAPS_KEYS[key]] = int(rest.split()[0])
    return values


def mem_available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def processes(rig: KataRig, needle: str) -> dict[str, list[int]]:
    """state-dir sandbox id → pids of our processes whose program (argv[0]) has `needle`
    (virtiofsd is two: a parent and its child in a new pid namespace)."""
    found: dict[str, list[int]] = {}
    for pid, argv in rig.leftovers():
        if needle in argv.split()[0] and str(rig.state_dir) in argv:
            sandbox = argv.split(str(rig.state_dir) + "/", 1)[1].split("/", 1)[0]
            found.setdefault(sandbox, []).append(pid)
    return found


def shim_pids(rig: KataRig) -> dict[str, int]:
    found = {}
    for pid, argv in rig.leftovers():
        if "containerd-shim-kata-v2" in argv and " -id " in f" {argv} ":
            found[argv.split(" -id ", 1)[1].split()[0]] = pid
    return found


def guest_used_kb(rig: KataRig, task: str) -> int:
    result = rig.ctr("task", "exec", "--exec-id", "mem", task, "cat", "/proc/meminfo", timeout=120)
    info = {
        line.split(":")[0]: int(line.split()[1])
        for line in result.stdout.decode().splitlines()
        if ":" in line
    }
    return info.get("MemTotal", 0) - info.get("MemAvailable", 0)


def first_output(rig: KataRig, runtime: str, name: str) -> float:
    task = f"{rig.marker}-{name}"
    argv = ["ctr", "--address", rig.containerd.address, *rig.run_args(task, ["echo", "hi"], "--rm")]
    argv[argv.index(KATA)] = runtime
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 300)
    took = time.monotonic() - began
    _, err = proc.communicate(timeout=120)
    if not ready or proc.returncode != 0:
        raise RuntimeError(f"ctr run {runtime}: rc={proc.returncode} {err.decode()[-500:]}")
    return took


def start_pods(rig: KataRig, runtime: str, count: int) -> tuple[list[str], float]:
    names = [rig.id(f"{'vm' if runtime == KATA else 'runc'}{i}") for i in range(count)]
    began = time.monotonic()
    procs = []
    for task in names:
        argv = ["ctr", "--address", rig.containerd.address]
        argv += rig.run_args(task, rig.sh("sleep 3600"), "-d")
        argv[argv.index(KATA)] = runtime
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr run -d {runtime}: {err.decode()[-500:]}")
    return names, time.monotonic() - began


def med(values: list[int] | list[float]) -> float:
    return round(statistics.median(values), 2) if values else 0


def pod_memory(rig: KataRig, names: list[str]) -> dict[str, Any]:
    qemus, fsds, shims = processes(rig, "qemu-system"), processes(rig, "virtiofsd"), shim_pids(rig)
    rows = []
    for task in names:
        qemu = smaps(qemus[task][0])
        fsd = sum(smaps(pid)["pss"] for pid in fsds.get(task, []))
        shim = smaps(shims[task])["pss"] if task in shims else 0
        rows.append({**{f"qemu_pss_{k}_kb": v for k, v in qemu.items()}, "fsd": fsd, "shim": shim})
    summary = {key: med([r[key] for r in rows]) for key in rows[0] if key.startswith("qemu")}
    summary["qemu_pss_kb"] = summary.pop("qemu_pss_pss_kb")
    summary["virtiofsd_pss_kb"] = med([r["fsd"] for r in rows])
    summary["shim_pss_kb"] = med([r["shim"] for r in rows])
    summary["pod_pss_kb"] = med([r["qemu_pss_pss_kb"] + r["fsd"] + r["shim"] for r in rows])
    summary["guest_used_kb"] = med([guest_used_kb(rig, task) for task in names[:3]])
    return summary


def run_design(image: Path, design: str, pods: int, extra: dict[str, Any]) -> dict[str, Any]:
    keys = design_keys(image, design) | extra
    config = QemuConfig.from_table({k: v for k, v in keys.items() if v != ""})
    report: dict[str, Any] = {"design": design, "keys": keys, "pods": pods}
    report["bare_kernel_to_init_s"] = round(bare_boot(config), 2)
    with KataRig(hypervisor="qemu") as rig:
        write_config(rig, {k: v for k, v in keys.items() if v != ""})
        report["create_to_first_output_s"] = round(first_output(rig, KATA, "first"), 2)
        report["runc_create_to_first_output_s"] = round(first_output(rig, RUNC, "rfirst"), 2)
        before = mem_available_kb()
        names, wall = start_pods(rig, KATA, pods)
        time.sleep(5)  # let the guests settle (page reporting returns freed pages)
        after = mem_available_kb()
        report["start_wall_s"] = round(wall, 1)
        report["host_mem_available_kb"] = {"before": before, "after": after}
        report["host_mem_drop_per_pod_kb"] = round((before - after) / pods)
        report["memory"] = pod_memory(rig, names)
        start_pods(rig, RUNC, min(pods, 3))
        report["runc_shim_pss_kb"] = med([smaps(p)["pss"] for p in _runc_shims(rig)])
        report["load_average"] = load_average()
    return report


def file_io(image: Path, args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    """share_io's run (dd, chmod/chown, tar -x) once per shared fs, on the image design."""
    keys = {k: v for k, v in (design_keys(image, "image") | extra).items() if v != ""}
    report: dict[str, Any] = {"design": "image", "mib": args.io_mib, "files": args.io_files}
    report["runs"] = args.io_runs
    report["load_before"] = load_average()
    for shared_fs in args.io.split(","):
        table = keys | {"shared_fs": shared_fs}
        report[shared_fs] = measure_io(table, args.io_mib, args.io_files, args.io_runs)
    report["load_average"] = load_average()
    return report


def _runc_shims(rig: KataRig) -> list[int]:
    return [pid for pid, argv in rig.leftovers() if "containerd-shim-runc-v2" in argv]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", type=Path, default=Path("/tmp/kata-shim-test-image"))
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--designs", default="initrd,image")
    parser.add_argument("--set", action="append", default=[], help="extra qemu key=value (int)")
    parser.add_argument("--io", default="virtio-9p,virtio-fs", help='shared fs list, "" = no IO')
    parser.add_argument("--io-mib", type=int, default=256)
    parser.add_argument("--io-files", type=int, default=2000)
    parser.add_argument("--io-runs", type=int, default=1, help="median over this many")
    args = parser.parse_args()
    build(args.image, progress=lambda m: None)
    extra: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        flags = {"true": True, "false": False}
        extra[key] = int(value) if value.isdigit() else flags.get(value, value)
    result: dict[str, Any] = {"benchmark": "vm_density", "load_before": load_average()}
    for design in filter(None, args.designs.split(",")):
        print(f"[vm_density] {design}: {args.pods} pods", file=sys.stderr, flush=True)
        result[design] = run_design(args.image, design, args.pods, extra)
    if args.io:
        print(f"[vm_density] file IO: {args.io}", file=sys.stderr, flush=True)
        result["file_io"] = file_io(args.image, args, extra)
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
