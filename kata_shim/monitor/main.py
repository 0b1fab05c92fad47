"""`kata-shim-monitor`: serve every running shim's metrics and sandbox list on one address.

    kata-shim-monitor [--listen 127.0.0.1:8090] [--state-root DIR] [--config PATH]

asyncio (the stdlib loop): the shims are scraped concurrently over their unix
sockets with the same small HTTP code the shims serve with, and the monitor's
own endpoint runs on that loop too, so one slow shim never blocks the others
(http.server would need a thread per scrape). SIGTERM/SIGINT stop it (status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from kata_shim import __version__

__all__ = ["main", "parse_listen"]

log = logging.getLogger("kata-shim-monitor")
DEFAULT_LISTEN = "127.0.0.1:8090"


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _default_state_root(config: str | None) -> Path:
    from kata_shim.config import ConfigError, load_config
    from kata_shim.config.schema import DEFAULT_STATE_DIR

    try:
        return Path(load_config(config).runtime.state_dir)
    except ConfigError as exc:
        log.warning("configuration unusable (%s): using %s", exc, DEFAULT_STATE_DIR)
        return Path(DEFAULT_STATE_DIR)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kata-shim-monitor",
        description="Aggregate the metrics of every running kata-shim on one HTTP endpoint "
        "(/metrics, /sandboxes, /agent-url?sandbox=ID).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--listen", type=parse_listen, default=DEFAULT_LISTEN, metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_LISTEN}; port 0 picks one)",
    )  # fmt: skip
    parser.add_argument(
        "--state-root", type=Path, metavar="DIR",
        help="the shims' sandbox state dir (default: [runtime] state_dir of the configuration)",
    )  # fmt: skip
    parser.add_argument(
        "--config", metavar="PATH", help="configuration.toml to read state_dir from"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="per-shim scrape timeout (s)")
    return parser


async def serve(listen: tuple[str, int], state_root: Path, timeout: float) -> None:
    from kata_shim.metrics.http import HEAD_LIMIT, handler_for
    from kata_shim.monitor.server import Monitor

    monitor = Monitor(state_root, timeout)
    server = await asyncio.start_server(
        handler_for(monitor.routes()),
        listen[0],
        listen[1],
        limit=HEAD_LIMIT,
    )
    host, port = server.sockets[0].getsockname()[:2]
    log.info("listening on %s:%d (state root %s)", host, port, state_root)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="kata-shim-monitor: %(message)s")
    state_root = args.state_root or _default_state_root(args.config)
    try:
        asyncio.run(serve(args.listen, state_root, args.timeout))
    except OSError as exc:
        print(f"kata-shim-monitor: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
