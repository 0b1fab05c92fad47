"""Unix sockets at paths longer than a sun_path (107 bytes): a short alias to bind or dial.

A `sockaddr_un` holds at most 107 path bytes, so a socket under a long state
root (`[runtime] state_dir` plus a 64-hex sandbox id) cannot be bound or
dialled by its name. Like systemd's `connect_unix_path`, we open the socket's
directory O_PATH and use `/proc/self/fd/<fd>/<name>` instead: the kernel
resolves it to the same directory, so the socket stays where it belongs
(inside the sandbox's state directory, removed with it) and both ends log the
one real name. Paths that fit are used as they are. When the alias cannot help
(the name alone is too long, the directory is missing, no /proc), the error
names the path, its length, the limit and the fix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from kata_shim.errors import InvalidArgument

__all__ = ["SUN_PATH_MAX", "check_reachable", "short_address"]

#: path bytes a sun_path holds (108 with the terminating NUL)
SUN_PATH_MAX = 107
_FIX = "use a shorter [runtime] state_dir (or sandbox id)"


def _too_long(path: Path, why: str) -> InvalidArgument:
    size = len(os.fsencode(path))
    return InvalidArgument(
        f"unix socket path {path} is {size} bytes, over the {SUN_PATH_MAX}-byte sun_path "
        f"limit, and {why}; fix: {_FIX}"
    )


@contextlib.contextmanager
def short_address(path: Path) -> Iterator[str]:
    """An address for `path` that fits a sun_path, valid inside the context: `path`
    itself, or `/proc/self/fd/<fd>/<name>` through an O_PATH fd of its directory."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    try:
        fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _too_long(path, f"its directory cannot be opened ({exc.strerror})") from exc
    try:
        yield _alias(path, fd)
    finally:
        os.close(fd)


def _alias(path: Path, fd: int) -> str:
    directory = f"/proc/self/fd/{fd}"
    alias = f"{directory}/{path.name}"
    if len(os.fsencode(alias)) > SUN_PATH_MAX:
        raise _too_long(path, f"so is its name {path.name!r} alone")
    try:
        seen, held = os.stat(directory), os.fstat(fd)
    except OSError as exc:
        raise _too_long(path, f"{directory} is not available ({exc.strerror})") from exc
    if (seen.st_dev, seen.st_ino) != (held.st_dev, held.st_ino):
        raise _too_long(path, f"{directory} does not lead to its directory (is /proc ours?)")
    return alias


def check_reachable(path: Path) -> None:
    """Raise the clear error now if no address for `path` fits a sun_path."""
    with short_address(path):
        return
