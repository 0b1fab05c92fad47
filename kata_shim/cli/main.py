"""Entry point of `kata-shim` (console script → kata_shim.cli.main:main).

Subcommands: check, env, image (build), sandboxes, and exec (added by
exec_cmd.register). Exit status: 0 success, 1 failure (one line on stderr,
`kata-shim: <problem> (<fix>)`), 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from kata_shim import __version__
from kata_shim.cli import exec_cmd
from kata_shim.cli.common import PROG, CliError, load_effective_config

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (like containerd's ConfigPath; default: the shim's lookup)",
    )


def _run_check(args: argparse.Namespace) -> int:
    from kata_shim.cli.check import Host, render, run_checks

    config, reason = load_effective_config(args.config)
    report, status = render(run_checks(Host(config, reason)))
    sys.stdout.write(report)
    return status


def _run_env(args: argparse.Namespace) -> int:
    from kata_shim.cli.env_cmd import render_env, render_json

    config, reason = load_effective_config(args.config)
    sys.stdout.write((render_json if args.json else render_env)(config, reason))
    return 0


def _run_sandboxes(args: argparse.Namespace) -> int:
    from kata_shim.cli.sandboxes import list_sandboxes, render_json, render_table

    state_dir = args.state_dir
    if state_dir is None:
        config, _ = load_effective_config(args.config)
        state_dir = Path(config.runtime.state_dir)
    entries = list_sandboxes(state_dir)
    sys.stdout.write((render_json if args.json else render_table)(entries))
    return 0


def _run_image(args: argparse.Namespace) -> int:
    from kata_shim.image.builder import main as image_main

    return image_main(args.image_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Administer kata-shim: host checks, configuration, sandboxes."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = sub.add_parser("check", help="is this host ready to run VM sandboxes?")
    _config_option(check)
    check.set_defaults(handler=_run_check)
    env = sub.add_parser("env", help="the effective configuration and its source file")
    _config_option(env)
    env.add_argument("--json", action="store_true", help="JSON instead of TOML")
    env.set_defaults(handler=_run_env)
    image = sub.add_parser(
        "image", help="build the guest image (kata-shim image build --help)", add_help=False
    )
    image.add_argument("image_args", nargs=argparse.REMAINDER)
    image.set_defaults(handler=_run_image)
    sandboxes = sub.add_parser("sandboxes", help="sandboxes in the state dir, running or stale")
    _config_option(sandboxes)
    sandboxes.add_argument("--state-dir", type=Path, help="default: [runtime] state_dir")
    sandboxes.add_argument("--json", action="store_true", help="JSON instead of a table")
    sandboxes.set_defaults(handler=_run_sandboxes)
    exec_cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `kata-shim` with `argv` (default: sys.argv[1:]); return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["image"]:  # all of it is the image builder's (its own --help)
        return _run_image(argparse.Namespace(image_args=argv[1:]))
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
