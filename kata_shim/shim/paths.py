"""Where shims listen, and the small files a shim keeps in its bundle.

* `socket_address(address, namespace, id)` is containerd's `SocketAddress`:
  `unix:///run/containerd/s/` + hex(sha256(filepath.Join(address, namespace, id))),
  with Go's `filepath.Join` semantics (empty elements dropped, result cleaned),
  so an empty `-address` (iSulad) gives `sha256("ns/id")`.
* `atomic_write` writes a temp file created with O_EXCL, then renames (no fsync):
  readers (containerd, iSulad, our `delete`) never see a partial file.
Standard library only (hashlib, os): this module runs on every `start`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath

__all__ = [
    "ADDRESS_FILE",
    "NETWORK_RECORD",
    "OPTIONS_FILE",
    "PID_FILE",
    "SOCKET_DIR",
    "SOCKET_PATH_LIMIT",
    "STATE_ROOT_FILE",
    "atomic_write",
    "go_clean",
    "go_join",
    "read_text",
    "socket_address",
    "socket_path",
]

SOCKET_DIR = "/run/containerd/s"
SOCKET_PATH_LIMIT = 106  # containerd's socketPathLimit (sun_path minus the NUL and slack)
ADDRESS_FILE = "address"
PID_FILE = "shim.pid"
OPTIONS_FILE = "options.pb"
STATE_ROOT_FILE = "state-root"  # [runtime] state_dir the daemon used (spares `delete` the config)
UNIX_SCHEME = "unix://"
#: in a sandbox state dir: its pod network plumbing (= kata_shim.sandbox.qemu.podnet.RECORD)
NETWORK_RECORD = "network.json"


def go_clean(path: str) -> str:
    """Go's `filepath.Clean` on Linux (posixpath.normpath keeps a leading '//'; Go does not)."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def go_join(*elements: str) -> str:
    """Go's `filepath.Join`: drop empty elements, join with '/', clean; all empty → ''."""
    kept = [element for element in elements if element]
    if not kept:
        return ""
    return go_clean("/".join(kept))


def socket_address(address: str, namespace: str, task_id: str) -> str:
    """`unix:///run/containerd/s/<sha256 hex>` for one (containerd, namespace, id)."""
    digest = hashlib.sha256(go_join(address, namespace, task_id).encode()).hexdigest()
    path = f"{SOCKET_DIR}/{digest}"
    if len(path) > SOCKET_PATH_LIMIT:  # cannot happen with SOCKET_DIR; kept as a guard
        raise ValueError(f"socket path {path} exceeds {SOCKET_PATH_LIMIT} bytes")
    return UNIX_SCHEME + path


def socket_path(address: str) -> str | None:
    """Filesystem path of a `unix://` address; None for any other form (abstract, vsock)."""
    address = address.strip()
    if address.startswith(UNIX_SCHEME):
        return address[len(UNIX_SCHEME) :]
    return None


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically (O_EXCL temp file in the same dir, then rename).

    No fsync: these files describe a running shim, which no reboot survives;
    containerd keeps bundles on tmpfs (/run), and after a crash of an iSulad host
    (bundles on disk) `delete` reads an empty file as absent. Atomicity (a
    reader sees the old file or the whole new one) is kept.
    """
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, mode)
    except FileExistsError:  # left by a crashed writer with our (recycled) pid
        os.unlink(temp)
        fd = os.open(temp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.rename(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def read_text(path: str) -> str | None:
    """A small file's text, stripped; None when absent or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None
