"""`kata-shim exec <sandbox-id>`: a shell in a VM sandbox, through its debug console.

`register(subparsers)` adds the subcommand to the `kata-shim` parser (cli/main.py);
`python -m kata_shim.cli.exec_cmd` runs it alone. Needs a qemu sandbox started
with debug_console_enabled; anything else is a one-line error with the fix
(exit status 1). With a terminal: raw mode, Ctrl-] detaches. With a pipe: the
pipe's text is typed into the shell, then `exit`. The exit status is the shell's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kata_shim.cli.common import PROG, CliError, load_effective_config

__all__ = ["main", "register", "run_exec"]


def run_exec(args: argparse.Namespace) -> int:
    from kata_shim.debugconsole.client import ConsoleError, attach, console_socket

    state_dir: Path | None = args.state_dir
    if state_dir is None:
        config, _ = load_effective_config(args.config)
        state_dir = Path(config.runtime.state_dir)
    try:
        path = console_socket(state_dir, args.sandbox_id)
        if sys.stdin.isatty():
            sys.stderr.write(f"{PROG}: connected to {args.sandbox_id} (Ctrl-] detaches)\r\n")
        sys.stdout.flush()
        return attach(path, sys.stdin.fileno(), sys.stdout.fileno())
    except ConsoleError as exc:
        raise CliError(str(exc)) from exc


def register(subparsers: Any) -> None:
    """Add `exec` to a `add_subparsers()` object (handler in `handler` default)."""
    parser = subparsers.add_parser(
        "exec",
        help="a shell inside a VM sandbox (its debug console)",
        description="Attach to the debug console (a guest shell) of a VM sandbox started with "
        "debug_console_enabled = true. Ctrl-] detaches; `exit` ends the shell.",
    )
    parser.add_argument("sandbox_id", metavar="SANDBOX-ID", help="see `kata-shim sandboxes`")
    parser.add_argument("--config", metavar="PATH", help="configuration file (for state_dir)")
    parser.add_argument("--state-dir", type=Path, help="default: [runtime] state_dir")
    parser.set_defaults(handler=run_exec)


def main(argv: list[str] | None = None) -> int:
    """`kata-shim exec` on its own (`python -m kata_shim.cli.exec_cmd SANDBOX-ID`)."""
    from kata_shim.cli.main import main as kata_shim_main

    return kata_shim_main(["exec", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
