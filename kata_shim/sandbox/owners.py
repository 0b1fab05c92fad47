"""The owners a pod already has: the uids and gids a file in its share may be given.

A VM's file server chowns host files for the guest (9p passes ownership
through), so a backend that can restrict it (qemu/ownerguard.py) needs the
set of ids the pod legitimately uses. `Owners` is that set: uid and gid 0,
every container's and exec's OCI `process.user` (uid, gid,
additionalGids), and the users and groups named in each container rootfs's
`/etc/passwd` and `/etc/group`. The set only grows while the pod lives.

The rootfs files are read on the host, from a rootfs the guest may already
have written: every path component is opened with O_NOFOLLOW
(kata_shim.fdpath.walk), only a regular file is read, and at most
`MAX_ID_FILE` bytes of it. A file that is missing, a link or not regular
adds nothing (logged), never an error: the container may simply have no
such file.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kata_shim import fdpath

__all__ = ["MAX_ID_FILE", "Owners", "owners_in_rootfs", "owners_of_user"]

log = logging.getLogger(__name__)

#: bytes read at most from a rootfs's /etc/passwd or /etc/group
MAX_ID_FILE = 1 << 20
#: ids above this are not ids (uid_t is 32 bits; 0xFFFFFFFF means "unchanged" to chown)
MAX_ID = 0xFFFFFFFE


@dataclass(frozen=True, slots=True)
class Owners:
    """uids and gids (root's 0 is always in both)."""

    uids: frozenset[int] = frozenset({0})
    gids: frozenset[int] = frozenset({0})

    def __or__(self, other: Owners) -> Owners:
        return Owners(self.uids | other.uids, self.gids | other.gids)

    def __le__(self, other: Owners) -> bool:
        return self.uids <= other.uids and self.gids <= other.gids


def _ids(values: Iterable[object]) -> frozenset[int]:
    found = {0}
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
            found.add(value)
    return frozenset(found)


def owners_of_user(uid: object, gid: object, additional_gids: Iterable[object] = ()) -> Owners:
    """The ids of an OCI `process.user`: uid, gid, additionalGids (non-ids are skipped)."""
    return Owners(_ids([uid]), _ids([gid, *additional_gids]))


def _numeric(field: str) -> int | None:
    if not field.isdigit() or len(field) > 10:
        return None
    value = int(field)
    return value if value <= MAX_ID else None


def _parse(text: str, id_columns: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The id columns of each well-formed line (a line with any bad id is skipped)."""
    rows = []
    for line in text.splitlines():
        fields = line.split(":")
        if line.startswith("#") or len(fields) <= max(id_columns):
            continue
        ids = [_numeric(fields[column]) for column in id_columns]
        if all(value is not None for value in ids):
            rows.append(tuple(value for value in ids if value is not None))
    return rows


def _read_capped(root_fd: int, parts: list[str]) -> str:
    """The start of a regular file below `root_fd`, never through a link; "" otherwise."""
    try:
        with fdpath.opened(fdpath.walk(root_fd, parts)) as found:
            if not stat.S_ISREG(os.fstat(found).st_mode):
                log.info("%s in a rootfs is not a regular file: ignored", "/".join(parts))
                return ""
            # reopens the very file `found` holds (the magic link is not a path walk)
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
            with fdpath.opened(os.open(fdpath.fd_path(found), flags)) as readable:
                return os.read(readable, MAX_ID_FILE).decode("utf-8", errors="replace")
    except OSError as exc:
        log.debug("%s in a rootfs cannot be read safely: %s", "/".join(parts), exc)
        return ""


def owners_in_rootfs(rootfs: Path) -> Owners:
    """The users (uid, primary gid) of `rootfs`/etc/passwd and the groups of /etc/group."""
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("rootfs %s cannot be opened to read its users: %s", rootfs, exc)
        return Owners()
    with fdpath.opened(root_fd):
        users = _parse(_read_capped(root_fd, ["etc", "passwd"]), (2, 3))
        groups = _parse(_read_capped(root_fd, ["etc", "group"]), (2,))
    uids = _ids(uid for uid, _ in users)
    gids = _ids([*(gid for _, gid in users), *(gid for (gid,) in groups)])
    return Owners(uids, gids)
