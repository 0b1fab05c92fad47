"""The agent's OCI bundle: the request's grpc.Spec / grpc.Process → runc's JSON.

Field mapping is kata_shim.oci's (descriptor-driven); this module adds what
the agent decides on top of the host's spec, in one place:
* root.path must be an absolute path that exists where the agent runs;
* the process needs args; cwd defaults to "/";
* linux.cgroupsPath defaults to /kata_shim/<sandbox>/<container> (also when the
  host sent a systemd-style "slice:prefix:name" path, which cgroupfs cannot use);
* a namespace path that does not exist here is dropped (network: the entry is
  removed, so the container shares the agent's network, as in Kata);
* in a VM, host paths are refused or dropped (guest/hostpaths.py); the pod's
  namespaces are put in afterwards by the container table (guest/podns.py);
* in a VM, the container's /dev/shm mount becomes a bind of the pod's /dev/shm
  (guest/sandbox.py), so the containers of a pod share it, as in Kata.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

from kata_shim import oci
from kata_shim.cgroupfs import CGROUP_ROOT, default_cgroups_path
from kata_shim.errors import InvalidArgument, NotFound
from kata_shim.guest import hostpaths
from kata_shim.proto import oci_pb2

__all__ = [
    "CGROUP_ROOT",
    "container_config",
    "default_cgroups_path",
    "process_config",
    "resources_config",
    "validate_id",
]

log = logging.getLogger(__name__)

OCI_VERSION = "1.0.2"
# container and exec ids end up in file names and runc ids
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")


def validate_id(kind: str, value: str) -> str:
    if not _ID.fullmatch(value):
        raise InvalidArgument(f"invalid {kind} id {value!r}")
    return value


def container_config(
    spec: oci_pb2.Spec,
    *,
    sandbox_id: str,
    container_id: str,
    vm_roots: Sequence[str] | None = None,
    shm: str | None = None,
) -> dict[str, Any]:
    """config.json for `runc create`, from the CreateContainer request's spec.

    `vm_roots`: in a VM, the directories rootfs and bind sources must lie in
    (guest/hostpaths.py: host namespace and device paths are dropped too).
    `shm`: the pod's /dev/shm directory the container's /dev/shm binds."""
    config = oci.spec_to_json(spec)
    config.setdefault("ociVersion", OCI_VERSION)
    root = config.get("root", {}).get("path", "")
    if not os.path.isabs(root):
        raise InvalidArgument(f"container {container_id}: root.path {root!r} is not absolute")
    if vm_roots is not None:
        config = hostpaths.confine(config, container_id, vm_roots)
    if shm is not None:
        config["mounts"] = _pod_shm(config.get("mounts", []), shm)
    if not os.path.isdir(root):
        raise NotFound(f"container {container_id}: rootfs {root} does not exist")
    if "process" not in config:
        raise InvalidArgument(f"container {container_id}: spec has no process")
    config["process"] = _process(config["process"])
    linux = config.setdefault("linux", {})
    path = linux.get("cgroupsPath", "")
    if not path or ":" in path:
        linux["cgroupsPath"] = default_cgroups_path(sandbox_id, container_id)
    linux["namespaces"] = _namespaces(linux.get("namespaces", []), container_id)
    return config


def process_config(process: oci_pb2.Process) -> dict[str, Any]:
    """process.json for `runc exec --process`."""
    return _process(oci.process_to_json(process))


def resources_config(resources: oci_pb2.LinuxResources) -> dict[str, Any]:
    """The JSON `runc update --resources` reads."""
    return oci.resources_to_json(resources)


def _process(process: dict[str, Any]) -> dict[str, Any]:
    if not process.get("args"):
        raise InvalidArgument("process has no args")
    process.setdefault("cwd", "/")
    process.setdefault("user", {})  # uid/gid 0 are proto3 zero values, absent from JSON
    return process


def _pod_shm(mounts: list[dict[str, Any]], shm: str) -> list[dict[str, Any]]:
    """`mounts` with each /dev/shm mount replaced by a bind of the pod's `shm`."""
    shared = {
        "destination": "/dev/shm",
        "type": "bind",
        "source": shm,
        "options": ["rbind", "nosuid", "nodev", "noexec"],
    }
    return [
        dict(shared)
        if os.path.normpath("/" + str(m.get("destination", "")).lstrip("/")) == "/dev/shm"
        else m
        for m in mounts
    ]


def _namespaces(namespaces: list[dict[str, Any]], container_id: str) -> list[dict[str, Any]]:
    kept = []
    for ns in namespaces:
        path = ns.get("path")
        if path and not os.path.exists(path):
            if ns.get("type") == "network":
                log.info("container %s: sharing the agent's network (no %s)", container_id, path)
                continue
            log.warning(
                "container %s: no %s namespace at %s; a new one", container_id, ns.get("type"), path
            )
            ns = {"type": ns.get("type", "")}
        kept.append(ns)
    return kept
