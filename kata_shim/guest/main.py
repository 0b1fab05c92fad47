"""kata-agent-py: the guest agent's entry point.

`kata-agent-py --listen unix:/run/agent.sock [--state-dir DIR]`; without
--listen the channel comes from the kernel command line (`agent.server_addr=`
or `kata_shim.agent=`). Serves until SIGTERM/SIGINT, then removes every
container it created. Logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from kata_shim.guest.channel import serve_channel
from kata_shim.guest.containers import ContainerManager
from kata_shim.guest.reaper import Reaper
from kata_shim.guest.service import AgentService, HealthService
from kata_shim.proto.agent_ttrpc import AGENT_SERVICE_DESC
from kata_shim.proto.health_ttrpc import HEALTH_DESC
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher

__all__ = ["main"]

log = logging.getLogger("kata_shim.guest")


def listen_from_cmdline(cmdline: str) -> str | None:
    for arg in cmdline.split():
        for key in ("agent.server_addr=", "kata_shim.agent="):
            if arg.startswith(key):
                return arg[len(key) :]
    return None


async def serve(listen: str, state_dir: Path, runc: str) -> int:
    loop = asyncio.get_running_loop()
    reaper = Reaper()
    reaper.install(loop)
    manager = ContainerManager(state_dir, reaper, runc)
    dispatcher = Dispatcher()
    dispatcher.register(AGENT_SERVICE_DESC, AgentService(manager))
    dispatcher.register(HEALTH_DESC, HealthService())
    server = Server(dispatcher)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port_task = await serve_channel(server, listen)
    log.info("agent ready (state %s)", state_dir)
    await stop.wait()
    log.info("agent stopping: removing %d containers", len(manager.containers))
    server.close()
    if port_task is not None:
        port_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await port_task
    await manager.destroy()
    reaper.uninstall()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kata-agent-py", description=__doc__)
    parser.add_argument("--listen", help="unix:PATH | vport:NAME | vsock:PORT")
    parser.add_argument("--state-dir", type=Path, default=Path("/run/kata-agent"))
    parser.add_argument("--runc", default="runc", help="runc binary")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    listen = args.listen
    if listen is None:
        with contextlib.suppress(OSError):
            listen = listen_from_cmdline(Path("/proc/cmdline").read_text())
    if not listen:
        parser.error("no --listen and no agent.server_addr= on the kernel command line")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(serve(listen, args.state_dir, args.runc))


if __name__ == "__main__":
    sys.exit(main())
