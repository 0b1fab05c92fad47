"""kata-agent-py: the guest agent's entry point (console script → kata_shim.guest.main:main).

`kata-agent-py --listen unix:/run/agent.sock [--state-dir DIR] [--sandbox-id ID]`;
without --listen the channel comes from the kernel command line
(`agent.server_addr=`, `kata_shim.channel=` or `kata_shim.agent=`; `agent.log=`
sets the level). Becomes child subreaper, serves until SIGTERM/SIGINT, then
kills and deletes every container it created (and its mounts and cgroups)
and exits 0. Logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from kata_shim.errors import ShimError
from kata_shim.guest import hostpaths, network
from kata_shim.guest.channel import parse_listen, serve_channel
from kata_shim.guest.containers import ContainerTable
from kata_shim.guest.localpod import enter_pod_namespaces
from kata_shim.guest.reaper import Reaper
from kata_shim.guest.runc import Runc
from kata_shim.guest.sandbox import GuestSandbox
from kata_shim.guest.service import MAX_READ, AgentService, HealthService
from kata_shim.guest.spawn import wake
from kata_shim.proto.agent_ttrpc import AGENT_SERVICE_DESC
from kata_shim.proto.health_ttrpc import HEALTH_DESC
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher

__all__ = ["from_cmdline", "listen_from_cmdline", "main", "serve"]

log = logging.getLogger("kata_shim.guest")

LISTEN_KEYS = ("agent.server_addr=", "kata_shim.channel=", "kata_shim.agent=")
SEND_BUFFER = 4 * MAX_READ  # a full ReadStdout reply (plus skb overhead) fits in one send()


def from_cmdline(cmdline: str, keys: tuple[str, ...]) -> str | None:
    """The value of the first `key=value` word of the kernel command line, by key order."""
    words = cmdline.split()
    for key in keys:
        for word in words:
            if word.startswith(key):
                return word[len(key) :]
    return None


def listen_from_cmdline(cmdline: str) -> str | None:
    return from_cmdline(cmdline, LISTEN_KEYS)


async def serve(
    listen: str, state_dir: Path, runc: str = "runc", sandbox_id: str = "", *, pod: bool = False
) -> int:
    """Run the agent until SIGTERM/SIGINT (0) or until its channel fails (1); `pod`: the local
    backend's agent, standing for the pod on the host (guest/sandbox.py)."""
    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.install(loop)
    in_vm = False
    with contextlib.suppress(OSError):
        in_vm = hostpaths.running_in_vm(Path("/proc/cmdline").read_text())
    sandbox = GuestSandbox(state_dir, reaper, sandbox_id, in_vm=in_vm, local_pod=pod)
    containers = ContainerTable(state_dir, sandbox, Runc(state_dir / "runc", reaper, runc), reaper)
    if in_vm:
        network.loopback_up()  # the pod's containers share this netns and its localhost
    dispatcher = Dispatcher()
    dispatcher.register(AGENT_SERVICE_DESC, AgentService(containers))
    dispatcher.register(HEALTH_DESC, HealthService())
    server = Server(dispatcher, send_buffer=SEND_BUFFER)
    stop: asyncio.Future[None] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, wake, stop)
    port_task = await serve_channel(server, listen)
    log.info("agent ready on %s (state %s)", listen, state_dir)
    waiters: set[asyncio.Future[None]] = {stop} | ({port_task} if port_task else set())
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    code = 0 if stop.done() else 1
    if code and port_task is not None and not port_task.cancelled():
        log.error("agent channel %s failed: %r", listen, port_task.exception())
    log.info("agent stopping: removing %d containers", len(containers))
    await _shut_down(server, port_task, containers, sandbox)
    reaper.uninstall()
    return code


async def _shut_down(
    server: Server,
    port_task: asyncio.Task[None] | None,
    containers: ContainerTable,
    sandbox: GuestSandbox,
) -> None:
    """Stop serving, remove every container, then the sandbox's resources (even if that failed)."""
    server.close()
    if port_task is not None:
        port_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await port_task
    try:
        await containers.remove_all()
    finally:
        sandbox.destroy()  # its mounts, cgroups and a temporary console directory


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kata-agent-py", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", help="unix:PATH | vport:NAME | vsock:PORT")
    parser.add_argument("--state-dir", type=Path, default=Path("/run/kata-agent"))
    parser.add_argument("--runc", default="runc", help="runc binary")
    parser.add_argument("--sandbox-id", default="", help="until CreateSandbox names it")
    parser.add_argument("--log-level", default=None, help="debug, info (default), warning...")
    parser.add_argument("--netns", type=Path, help="join this network namespace (local backend)")
    parser.add_argument(
        "--local-pod",
        action="store_true",
        help="the local backend's agent: own UTS namespace, the pod's namespaces and /dev/shm",
    )
    args = parser.parse_args(argv)
    cmdline = ""
    with contextlib.suppress(OSError):
        cmdline = Path("/proc/cmdline").read_text()
    args.listen = args.listen or listen_from_cmdline(cmdline)
    if not args.listen:
        parser.error("no --listen and no agent.server_addr= on the kernel command line")
    try:
        parse_listen(args.listen)
    except ShimError as exc:
        parser.error(exc.message)
    args.log_level = args.log_level or from_cmdline(cmdline, ("agent.log=",)) or "info"
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        enter_pod_namespaces(args.netns, args.local_pod)  # before any thread (guest/localpod.py)
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return asyncio.run(
        serve(args.listen, args.state_dir, args.runc, args.sandbox_id, pod=args.local_pod)
    )


if __name__ == "__main__":
    sys.exit(main())
