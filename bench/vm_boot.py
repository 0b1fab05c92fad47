"""VM sandbox boot time under the configured accelerator (TCG on the development hosts).

Reports, as JSON, medians over --runs:
  bare_kernel_to_init_s     QEMU start → the guest's /init prints its marker
                            (same QEMU flags as the sandbox, `kata_shim.run=marker`)
  create_to_agent_ready_s   QemuSandbox.start(): QEMU start → agent answers Health.Check
  create_to_first_output_s  the above + CreateContainer/StartContainer → first stdout bytes
Run: `.venv/bin/python bench/vm_boot.py [--image DIR] [--runs N]` (builds the image if needed).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from kata_shim import oci
from kata_shim.config.schema import AgentConfig, HypervisorConfig
from kata_shim.devenv.specs import container_spec, shared_rootfs
from kata_shim.image.builder import build
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.sandbox.base import SandboxSpec, create_sandbox
from kata_shim.sandbox.qemu.accel import choose_accel, host_tsc_khz
from kata_shim.sandbox.qemu.cmdline import QemuConfig, SandboxPaths, build_command


def bare_boot(config: QemuConfig) -> float:
    return boot_selftest(config, "marker", re.compile(b"init-reached"))[0]


def boot_selftest(config: QemuConfig, run: str, until: re.Pattern[bytes]) -> tuple[float, bytes]:
    """Boot with `kata_shim.run=<run>`: (seconds until `until` is on the console, console)."""
    if config.shared_fs == "virtio-fs":  # no virtiofsd here: the bare boot shares nothing
        config = dataclasses.replace(config, shared_fs="none")
    with tempfile.TemporaryDirectory() as tmp:
        paths = SandboxPaths(*(Path(tmp) / n for n in ("qmp", "agent", "console", "share")))
        paths.share.mkdir()
        argv = build_command(config, paths, choose_accel(config.accel), host_tsc_khz())
        argv[argv.index("-append") + 1] += f" kata_shim.run={run}"
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            while not until.search(console := _read(paths.console)):
                if proc.poll() is not None and not until.search(_read(paths.console)):
                    raise RuntimeError(f"guest powered off without {until!r}")
                time.sleep(0.01)
            return time.perf_counter() - started, console
        finally:
            proc.kill()
            proc.wait()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


async def sandbox_boot(table: dict[str, str]) -> tuple[float, float]:
    state = Path(tempfile.mkdtemp(prefix="ks-bench-", dir="/tmp"))
    sandbox = create_sandbox(
        SandboxSpec(
            "bench",
            state,
            hypervisor=HypervisorConfig("qemu", table),
            agent=AgentConfig(dial_timeout=120),
        )
    )
    started = time.perf_counter()
    try:
        await sandbox.start()
        ready = time.perf_counter() - started
        client = await sandbox.connect_agent()
        agent = AgentServiceClient(client)
        spec = container_spec(["/bin/echo", "first"])
        spec["root"] = {
            "path": await sandbox.share("c", "rootfs", shared_rootfs()),
            "readonly": True,
        }
        await agent.CreateContainer(
            agent_pb2.CreateContainerRequest(container_id="c", OCI=oci.spec_from_json(spec))
        )
        await agent.StartContainer(agent_pb2.StartContainerRequest(container_id="c"))
        await agent.ReadStdout(agent_pb2.ReadStreamRequest(container_id="c", len=64))
        first_output = time.perf_counter() - started
        client.close()
        return ready, first_output
    finally:
        await sandbox.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", type=Path, default=Path("/tmp/kata-shim-test-image"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    build(args.image, progress=lambda m: None)
    table = {
        "kernel": str(args.image / "vmlinux"),
        "initrd": str(args.image / "kata-shim-initrd.img"),
    }
    config = QemuConfig.from_table(table)
    bare = [bare_boot(config) for _ in range(args.runs)]
    boots = [asyncio.run(sandbox_boot(table)) for _ in range(args.runs)]
    result = {
        "accel": choose_accel(config.accel),
        "machine": config.machine_type,
        "runs": args.runs,
        "bare_kernel_to_init_s": round(statistics.median(bare), 2),
        "create_to_agent_ready_s": round(statistics.median(b[0] for b in boots), 2),
        "create_to_first_output_s": round(statistics.median(b[1] for b in boots), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
