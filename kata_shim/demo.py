"""The README's main job: `scripts/dev.sh demo` → `python -m kata_shim.demo`.

Current stage (foundation): start a private containerd 1.6, subscribe with
`ctr events`, and forward a `/tasks/exit` event to containerd's ttrpc socket with
our own ttrpc client — proving our wire format against the real peer. Stops
containerd by PID and removes its scratch directory, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time

from kata_shim.devenv.containerd import PrivateContainerd
from kata_shim.events.envelope import make_forward_request
from kata_shim.proto import events_pb2
from kata_shim.proto.events_service_ttrpc import EventsClient
from kata_shim.ttrpc.client import Client


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


async def forward_exit(ttrpc_address: str, container_id: str) -> float:
    """Forward one TaskExit over ttrpc; return the round-trip time in seconds."""
    event = events_pb2.TaskExit(container_id=container_id, id=container_id, pid=1, exit_status=0)
    event.exited_at.GetCurrentTime()
    client = await Client.connect_unix(ttrpc_address, timeout=5)
    try:
        started = time.perf_counter()
        await EventsClient(client).Forward(
            make_forward_request("default", "/tasks/exit", event), timeout=5
        )
        return time.perf_counter() - started
    finally:
        client.close()
        await client.wait_closed()


def read_event_line(events: subprocess.Popen[bytes], needle: str, timeout: float) -> str:
    """Return the first `ctr events` line containing `needle`."""
    assert events.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = events.stdout.readline().decode(errors="replace").strip()
        if needle in line:
            return line
    raise TimeoutError(f"ctr events did not show {needle!r} within {timeout}s")


def run(keep: bool) -> int:
    ctd = PrivateContainerd()
    say(f"starting a private containerd under {ctd.work}")
    try:
        ctd.start()
        version = ctd.ctr("version").stdout.decode().split("Server:")[-1].split()
        say(f"containerd up (pid {ctd.pid}, server {' '.join(version[:2])})")
        events = ctd.popen_ctr("events")
        time.sleep(1.0)
        rtt = asyncio.run(forward_exit(ctd.ttrpc_address, "kata-shim-demo"))
        say(f"forwarded /tasks/exit over our ttrpc client in {rtt * 1000:.1f} ms")
        line = read_event_line(events, "kata-shim-demo", timeout=10)
        events.kill()
        events.communicate()
        say(f"ctr events shows: {line}")
        return 0
    finally:
        ctd.stop()
        if not keep:
            shutil.rmtree(ctd.work, ignore_errors=True)
        say("containerd stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kata-shim-demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep containerd's scratch dir")
    args = parser.parse_args(argv)
    return run(args.keep)


if __name__ == "__main__":
    sys.exit(main())
