"""A deterministic cpio "newc" archive writer for initramfs images.

Entries are written in sorted path order with fixed ownership (root) and a
fixed mtime, so the same tree always yields the same bytes. Supports regular
files, directories and symlinks (all an initramfs needs; device nodes come
from devtmpfs at boot).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_newc"]

_TRAILER = "TRAILER!!!"


def _header(ino: int, mode: int, nlink: int, size: int, name: bytes) -> bytes:
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % value for value in fields)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _entries(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            path = base / name
            yield str(path.relative_to(root)), path


def _write_entry(out: BinaryIO, ino: int, name: str, path: Path) -> None:
    info = path.lstat()
    encoded = name.encode()
    if stat.S_ISLNK(info.st_mode):
        data, mode = os.readlink(path).encode(), stat.S_IFLNK | 0o777
    elif stat.S_ISDIR(info.st_mode):
        data, mode = b"", stat.S_IFDIR | (info.st_mode & 0o7777)
    elif stat.S_ISREG(info.st_mode):
        data, mode = path.read_bytes(), stat.S_IFREG | (info.st_mode & 0o7777)
    else:
        raise ValueError(f"{path}: unsupported file type for an initramfs")
    nlink = 2 if stat.S_ISDIR(mode) else 1
    head = _header(ino, mode, nlink, len(data), encoded) + encoded + b"\0"
    out.write(head + _pad(len(head)) + data + _pad(len(data)))


def write_newc(root: Path, out: BinaryIO) -> int:
    """Archive the tree under `root` into `out`; return the number of entries."""
    count = 0
    for count, (name, path) in enumerate(_entries(root), start=1):
        _write_entry(out, count, name, path)
    trailer = _TRAILER.encode()
    head = _header(0, 0, 1, 0, trailer) + trailer + b"\0"
    out.write(head + _pad(len(head)))
    out.write(b"\0" * (-out.tell() % 512) if out.seekable() else b"")
    return count
