"""The agent's guard against host paths in a container spec, when it runs in a VM.

In a VM every path in the host's spec means something else here: a host
namespace path (`/proc/<pid>/ns/...`) names a guest process, a host device
path a guest device, a host directory a guest directory. So in a VM
(`kata_shim.agent=` on the kernel command line; not with the local backend,
where host and agent share a kernel) `confine`:
* refuses a rootfs or a bind-mount source outside the shared directory
  (`/run/kata-containers/shared/containers`) and the storages this sandbox
  or container had the agent mount — except a bind onto the container's own
  /dev, /proc or /sys, whose host source (e.g. a host device) is dropped;
* drops every namespace path (the agent then puts in the pod's IPC, UTS and,
  on request, PID namespaces, guest/podns.py; others are new; no network
  entry: the container shares the agent's network, as in Kata);
* drops linux.devices (host device nodes; the guest has its own).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from kata_shim.errors import InvalidArgument

__all__ = ["SHARED_DIR", "VM_KEY", "confine", "running_in_vm"]

log = logging.getLogger(__name__)

SHARED_DIR = "/run/kata-containers/shared/containers"  # = kata_shim.sandbox.share.GUEST_SHARED
VM_KEY = "kata_shim.agent="
SYSTEM_DESTINATIONS = ("/dev", "/proc", "/sys")


def running_in_vm(cmdline: str) -> bool:
    return any(word.startswith(VM_KEY) for word in cmdline.split())


def beneath(path: str, roots: Sequence[str]) -> bool:
    """`path` is absolute, has no `..`, and is one of `roots` or below one."""
    if not path.startswith("/") or ".." in path.split("/"):
        return False
    clean = posixpath.normpath(path)
    return any(clean == root or clean.startswith(root.rstrip("/") + "/") for root in roots)


def _is_bind(mount: Mapping[str, Any]) -> bool:
    options = mount.get("options") or []
    return mount.get("type") in ("bind", "rbind") or "bind" in options or "rbind" in options


def _mounts(cid: str, mounts: list[dict[str, Any]], roots: Sequence[str]) -> list[dict[str, Any]]:
    kept = []
    for mount in mounts:
        source = str(mount.get("source") or "")
        if _is_bind(mount) and not beneath(source, roots):
            if beneath(str(mount.get("destination") or ""), SYSTEM_DESTINATIONS):
                log.warning("container %s: host path %s not bound (not in the VM)", cid, source)
                continue
            raise InvalidArgument(
                f"container {cid}: bind mount source {source!r} is outside the shared "
                f"directory {SHARED_DIR}: refused (a host path means nothing in the VM)"
            )
        kept.append(mount)
    return kept


def _namespaces(cid: str, namespaces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for ns in namespaces:
        kind = ns.get("type", "")
        if ns.get("path"):
            log.info("container %s: ignoring %s namespace path %s", cid, kind, ns["path"])
            if kind == "network":
                continue
        kept.append({"type": kind})
    return kept


def confine(config: dict[str, Any], cid: str, roots: Sequence[str]) -> dict[str, Any]:
    """Check and strip `config` (runc's config.json) for a VM; `roots` the allowed dirs."""
    root = str(config.get("root", {}).get("path", ""))
    if not beneath(root, roots):
        raise InvalidArgument(
            f"container {cid}: rootfs {root!r} is outside the shared directory "
            f"{SHARED_DIR}: refused"
        )
    config["mounts"] = _mounts(cid, list(config.get("mounts") or []), roots)
    linux = config.setdefault("linux", {})
    linux["namespaces"] = _namespaces(cid, list(linux.get("namespaces") or []))
    devices = linux.pop("devices", None)
    if devices:
        log.warning("container %s: %d host device entries ignored", cid, len(devices))
    return config
