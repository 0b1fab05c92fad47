"""What the share's security settings cost: sequential file IO on a shared volume in the VM.

Two sandboxes in turn, each running one container that writes then reads a
file on a volume shared from the host (`dd`, 1 MiB blocks, fsync on write;
9p has no guest page cache by default, so the read goes through QEMU):
  confined    the defaults (docs/security.md): QEMU under the jail's seccomp
              filter, setpriv-reduced capabilities and `-sandbox`, the host
              side of the share nosuid,nodev;
  unconfined  the settings before it: no jail/setpriv, no `-sandbox`, the
              share's host side without nosuid,nodev.
Then `chmod -R` and `chown -R 1000:1000` over --files files in one directory
of the volume: each is one 9p call per file, but only a chown is answered by
the shim's owner guard (a seccomp user notification, qemu/ownerguard.py), so
the confined chown-vs-chmod gap is the guard's cost. Last, `tar -x` (then
`sync`) of a tarball of --files small files (1 KiB each, 100 per directory,
root-owned, read from the volume) into the container's rootfs, a private
writable busybox tree shared like any container rootfs; the host counts the
extracted files.
`--shared-fs virtio-fs` runs the same over virtio-fs (the sandbox's virtiofsd,
confined the same way; unconfined: virtiofsd without jail/setpriv).
Prints JSON: MB/s per mode and direction, chmod/chown files per second,
`tar -x` seconds (median over --runs), and the ratios.
Run: `.venv/bin/python bench/share_io.py [--image DIR] [--mib 256] [--files 2000] [--runs 1]
[--shared-fs virtio-9p|virtio-fs] [--modes confined,unconfined]`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import shutil
import statistics
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from kata_shim import oci
from kata_shim.config.schema import AgentConfig, HypervisorConfig
from kata_shim.devenv.containerd import busybox_rootfs
from kata_shim.devenv.specs import container_spec
from kata_shim.image.builder import build
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox import share
from kata_shim.sandbox.base import SandboxSpec, create_sandbox
from kata_shim.sandbox.owners import Owners
from kata_shim.sandbox.qemu import cmdline, virtiofsd

_TIMES = re.compile(rb"t" + rb" ([\d.]+)" * 8)
_PER_DIR = 100  # files per directory in the tarball
_MAKE_FILES = (
    "mkdir /data/d && cd /data/d && i=0; while [ $i -lt {n} ]; do : > f$i; i=$((i+1)); done"
)


def _no_prefix(*_caps: object) -> list[str]:
    return []


def _unconfined() -> None:
    cmdline.confine_prefix = _no_prefix  # type: ignore[assignment]  # no jail, no setpriv
    virtiofsd.confine_prefix = _no_prefix  # type: ignore[assignment]
    share.HOST_FLAGS = 0


async def _read(agent: AgentServiceClient, cid: str) -> bytes:
    out = bytearray()
    for read in (agent.ReadStdout, agent.ReadStderr):
        while data := await read(agent_pb2.ReadStreamRequest(container_id=cid, len=65536)):
            out += data
    return bytes(out)


def make_tarball(path: Path, files: int) -> None:
    """`files` root-owned 1 KiB files, _PER_DIR per directory, as an uncompressed tar."""
    payload = bytes(1024)
    with tarfile.open(path, "w") as tar:
        for index in range(files):
            info = tarfile.TarInfo(f"t/d{index // _PER_DIR}/f{index}")
            info.size, info.mode = len(payload), 0o644
            tar.addfile(info, io.BytesIO(payload))


def _script(mib: int, files: int) -> str:
    now = "$(cut -d' ' -f1 /proc/uptime)"  # busybox dd prints no rate; 10 ms ticks
    return (
        f"a={now}; dd if=/dev/zero of=/data/f bs=1048576 count={mib} conv=fsync 2>/dev/null; "
        f"b={now}; dd if=/data/f of=/dev/null bs=1048576 2>/dev/null; "
        f"c={now}; rm /data/f; {_MAKE_FILES.format(n=files)}; "
        f"d={now}; chmod -R 755 /data/d; e={now}; chown -R 1000:1000 /data/d; f={now}; "
        f"rm -rf /data/d; g={now}; tar -xf /data/files.tar -C / && sync; h={now}; "
        f'echo "t $a $b $c $d $e $f $g $h"'
    )


async def _run_container(sandbox: Any, root: Path, volume: Path, script: str) -> bytes:
    client = await sandbox.connect_agent()
    agent = AgentServiceClient(client)
    spec = container_spec(["/bin/sh", "-c", script])
    spec["root"] = {"path": await sandbox.share("c", "rootfs", root)}
    guest = await sandbox.share("c", "mount-0", volume)
    spec["mounts"].append(
        {"destination": "/data", "type": "bind", "source": guest, "options": ["rbind"]}
    )
    create = agent_pb2.CreateContainerRequest(container_id="c", OCI=oci.spec_from_json(spec))
    await agent.CreateContainer(create)
    await agent.StartContainer(agent_pb2.StartContainerRequest(container_id="c"))
    output = await _read(agent, "c")
    await agent.WaitProcess(agent_pb2.WaitProcessRequest(container_id="c"))
    client.close()
    return output


async def run_once(table: dict[str, Any], mib: int, files: int) -> list[float]:
    """One sandbox, one container: write/read MB/s, chmod/chown files/s, `tar -x` seconds."""
    state = Path(tempfile.mkdtemp(prefix="ks-bench-io-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="ks-bench-vol-", dir="/var/tmp"))
    volume, root = work / "volume", busybox_rootfs(work / "rootfs")
    volume.mkdir()
    make_tarball(volume / "files.tar", files)
    sandbox = create_sandbox(
        SandboxSpec(
            "benchio",
            state,
            hypervisor=HypervisorConfig("qemu", table),
            agent=AgentConfig(dial_timeout=300),
        )
    )
    sandbox.allow_owners(Owners(frozenset({1000}), frozenset({1000})))
    try:
        await sandbox.start()
        output = await _run_container(sandbox, root, volume, _script(mib, files))
        found = _TIMES.search(output)
        extracted = sum(1 for p in (root / "t").rglob("f*") if p.is_file())
        if found is None or extracted != files:
            raise RuntimeError(f"unexpected output ({extracted} files on the host): {output!r}")
        a, b, c, d, e, f, g, h = (float(v) for v in found.groups())
        return [mib / (b - a), mib / (c - b), files / (e - d), files / (f - e), h - g]
    finally:
        await sandbox.cleanup()
        shutil.rmtree(work)


_KEYS = ("write_mb_s", "read_mb_s", "chmod_files_s", "chown_files_s", "tar_x_s")


def measure(table: dict[str, Any], mib: int, files: int, runs: int) -> dict[str, float]:
    """The medians of `runs` run_once calls, by _KEYS (a fresh sandbox each)."""
    results = [asyncio.run(run_once(table, mib, files)) for _ in range(runs)]
    return {
        key: round(statistics.median(r[index] for r in results), 2 if key == "tar_x_s" else 1)
        for index, key in enumerate(_KEYS)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", type=Path, default=Path("/tmp/kata-shim-test-image"))
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--shared-fs", choices=("virtio-9p", "virtio-fs"), default="virtio-9p")
    parser.add_argument("--modes", default="confined,unconfined")
    args = parser.parse_args()
    modes = args.modes.split(",")
    build(args.image, progress=lambda m: None)
    table = {
        "kernel": str(args.image / "vmlinux"),
        "initrd": str(args.image / "kata-shim-initrd.img"),
        "shared_fs": args.shared_fs,
    }
    result: dict[str, Any] = {
        "shared_fs": args.shared_fs,
        "mib": args.mib,
        "files": args.files,
        "runs": args.runs,
    }
    for mode in modes:
        if mode == "unconfined":
            _unconfined()
            table = {**table, "seccompsandbox": "off"}
        medians = measure(table, args.mib, args.files, args.runs)
        result |= {f"{mode}_{key}": value for key, value in medians.items()}
    if "confined" in modes:
        result["guard_chown_vs_chmod"] = round(
            result["confined_chown_files_s"] / result["confined_chmod_files_s"], 3
        )
    if modes != ["confined", "unconfined"]:
        print(json.dumps(result))
        return
    for key in _KEYS:
        before = result[f"unconfined_{key}"]
        result[f"{key.split('_')[0]}_ratio"] = round(result[f"confined_{key}"] / before, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
