"""Command-line flags of containerd-shim-kata-v2, parsed the way Go's `flag` package does.

Accepted forms: `-name value`, `--name value`, `-name=value`, `--name=value`;
boolean flags also take `-debug=true|false`. The first argument that is not a
flag is the action (`start`, `delete`, or none = serve); `--` ends the flags.
Rules: an unknown flag, a missing value or an unknown action is a `FlagError`
(main prints it and exits 1); `-namespace` and `-id` are required for every
action (checked by `require_ids`), not for `-v`/`--version`/`-h`.
No imports but kata_shim.ids (not even dataclasses, ~5 ms): this runs on every start.
"""

from __future__ import annotations

from kata_shim.ids import identifier_problem

__all__ = ["ACTIONS", "USAGE", "FlagError", "Flags", "parse_flags", "require_ids"]

ACTIONS = ("start", "delete", "serve")

USAGE = """\
usage: containerd-shim-kata-v2 [flags] [start|delete]
  -namespace NS        containerd namespace (required)
  -id ID               task id (required)
  -address ADDR        containerd's gRPC socket (optional; empty under iSulad)
  -publish-binary BIN  binary for `BIN --address ADDR publish` (event fallback)
  -bundle DIR          bundle directory (default: the working directory)
  -socket PATH         serve on this unix socket instead of fd 3
  -debug               debug logging
  -v, --version        print the version and exit
no action: serve ttrpc (the daemon `start` spawns)
"""

_VALUE_FLAGS = {
    "namespace": "namespace",
    "address": "address",
    "publish-binary": "publish_binary",
    "id": "id",
    "bundle": "bundle",
    "socket": "socket",
}
_BOOL_FLAGS = {"debug": "debug", "v": "version", "version": "version", "h": "help", "help": "help"}
_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class FlagError(ValueError):
    """Bad command line; the message is printed to stderr as is."""


class Flags:
    """The parsed command line (attribute names follow the flags)."""

    __slots__ = (
        "action",
        "address",
        "bundle",
        "debug",
        "help",
        "id",
        "namespace",
        "publish_binary",
        "socket",
        "version",
    )

    def __init__(self) -> None:
        self.namespace = ""
        self.address = ""
        self.publish_binary = ""
        self.id = ""
        self.bundle = ""
        self.socket = ""
        self.debug = False
        self.version = False
        self.help = False
        self.action = "serve"

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Flags({fields})"


def _parse_bool(name: str, text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FlagError(f"invalid boolean value {text!r} for flag -{name}")


def _split(arg: str) -> tuple[str, str | None]:
    """'--name=value' → ('name', 'value'); '-name' → ('name', None)."""
    body = arg[2:] if arg.startswith("--") else arg[1:]
    if not body or body.startswith(("-", "=")):
        raise FlagError(f"bad flag syntax: {arg}")
    name, sep, value = body.partition("=")
    return name, (value if sep else None)


def _take_flag(flags: Flags, args: list[str], index: int) -> int:
    """Apply the flag at args[index]; return the index of the next argument."""
    name, value = _split(args[index])
    if name in _BOOL_FLAGS:
        setattr(flags, _BOOL_FLAGS[name], True if value is None else _parse_bool(name, value))
        return index + 1
    if name not in _VALUE_FLAGS:
        raise FlagError(f"flag provided but not defined: -{name}")
    if value is None:
        if index + 1 >= len(args):
            raise FlagError(f"flag needs an argument: -{name}")
        value = args[index + 1]
        index += 1
    setattr(flags, _VALUE_FLAGS[name], value)
    return index + 1


def _set_action(flags: Flags, positional: list[str]) -> None:
    if not positional:
        return
    if len(positional) > 1:
        raise FlagError(f"unexpected arguments after {positional[0]!r}: {' '.join(positional[1:])}")
    if positional[0] not in ("start", "delete"):
        raise FlagError(f"unknown action {positional[0]!r} (use start, delete, or none to serve)")
    flags.action = positional[0]


def parse_flags(argv: list[str]) -> Flags:
    """Parse argv (without the program name)."""
    flags = Flags()
    positional: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            positional += argv[index + 1 :]
            break
        if arg.startswith("-") and arg != "-":
            index = _take_flag(flags, argv, index)
        else:
            positional.append(arg)
            index += 1
    _set_action(flags, positional)
    return flags


def require_ids(flags: Flags) -> None:
    """The checks containerd's shim library makes before any action."""
    if not flags.namespace:
        raise FlagError("shim namespace cannot be empty (-namespace)")
    if not flags.id:
        raise FlagError("shim id cannot be empty (-id)")
    for name, value in (("namespace", flags.namespace), ("id", flags.id)):
        if problem := identifier_problem(value):  # -id names paths (state dir, bundle)
            raise FlagError(f"shim {name} {problem} (-{name})")
