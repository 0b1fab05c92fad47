"""What the task service reads from containerd's requests: bundle spec, pod placement, options.

* `load_bundle_spec` / `host_rootfs`: the bundle's config.json and its root path
  (relative paths are relative to the bundle).
* `pod_network`: the pod's netns path (the sandbox's network, sandbox/base.py).
* `placement`: sandbox, pod container or single container, from the CRI,
  CRI-O and dockershim annotations.
* `agent_spec`: the OCI JSON spec → `grpc.Spec` for CreateContainer, with the
  guest rootfs path and the constraints a VM imposes (Kata's behaviour): host
  hooks dropped, network and cgroup namespaces left to the sandbox, other
  namespace paths emptied (the agent puts in the pod's IPC and UTS namespaces),
  the cgroups path chosen by the agent in a VM; the local agent's containers run
  on the host, in the spec's cgroup as runc's would (sandbox/podcgroup.py
  `container_path`: inside the pod's cgroup_parent). For a VM (`vm`) the pid entry is
  removed, as Kata's runtime does: the agent gives a new PID namespace or the
  pod's (`sandbox_pidns`); the local agent gets it as the spec has it (none:
  the host's, as with runc).
* `sandbox_pidns`: whether the container shares the pod's PID namespace: its
  pid entry names a path, as containerd's CRI writes (`/proc/<sandbox pid>/ns/pid`)
  for `namespace_options.pid = POD` (Kata: any path means "the sandbox's").
* `exec_process` / `linux_resources` / `config_path`: the Any payloads.
"""

from __future__ import annotations

import copy
import enum
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim import oci
from kata_shim.errors import InvalidArgument, NotFound
from kata_shim.proto import oci_pb2, runtimeoptions_pb2
from kata_shim.protoparse import DecodeError, parse
from kata_shim.sandbox.base import PodNetworkRequest
from kata_shim.sandbox.podcgroup import container_path

__all__ = [
    "Placement",
    "Role",
    "agent_spec",
    "config_path",
    "exec_process",
    "host_rootfs",
    "linux_resources",
    "load_bundle_spec",
    "placement",
    "pod_network",
    "sandbox_pidns",
]

log = logging.getLogger(__name__)


class Role(enum.Enum):
    SANDBOX = "sandbox"  #: the pod's sandbox (pause) container: boots the VM
    CONTAINER = "container"  #: a container of an existing pod: reuses its VM
    SINGLE = "single"  #: no pod annotations: a VM of its own


@dataclass(frozen=True, slots=True)
class Placement:
    role: Role
    sandbox_id: str


# (type annotation, sandbox-id annotation, value meaning "sandbox", value meaning "container")
_POD_ANNOTATIONS = (
    ("io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id", "sandbox", "container"),
    ("io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID", "sandbox", "container"),
    ("io.kubernetes.docker.type", "io.kubernetes.sandbox.id", "podsandbox", "container"),
)


def placement(container_id: str, annotations: Mapping[str, str]) -> Placement:
    """Which sandbox a container belongs to, from its spec annotations."""
    for type_key, id_key, sandbox_value, container_value in _POD_ANNOTATIONS:
        kind = annotations.get(type_key)
        if kind == sandbox_value:
            return Placement(Role.SANDBOX, container_id)
        if kind == container_value:
            sandbox_id = annotations.get(id_key, "")
            if not sandbox_id:
                raise InvalidArgument(f"container {container_id}: {type_key} without {id_key}")
            return Placement(Role.CONTAINER, sandbox_id)
    return Placement(Role.SINGLE, container_id)


def load_bundle_spec(bundle: str) -> dict[str, Any]:
    """The bundle's config.json (NotFound if absent, InvalidArgument if not an object)."""
    path = Path(bundle) / "config.json"
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"bundle {bundle}: no config.json") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"bundle {bundle}: cannot read config.json: {exc}") from exc
    if not isinstance(spec, dict):
        raise InvalidArgument(f"bundle {bundle}: config.json is not a JSON object")
    return spec


def pod_network(spec: Mapping[str, Any]) -> PodNetworkRequest | None:
    """The spec's `linux.namespaces[type=network].path` (CNI's pod netns), if one is given."""
    linux = spec.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    for ns in namespaces if isinstance(namespaces, list) else []:
        if isinstance(ns, dict) and ns.get("type") == "network" and ns.get("path"):
            return PodNetworkRequest(Path(str(ns["path"])))
    return None


def sandbox_pidns(spec: Mapping[str, Any]) -> bool:
    """The spec's pid namespace entry names a path: join the pod's PID namespace."""
    linux = spec.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    for ns in namespaces if isinstance(namespaces, list) else []:
        if isinstance(ns, dict) and ns.get("type") == "pid":
            return bool(ns.get("path"))
    return False


def host_rootfs(bundle: str, spec: Mapping[str, Any]) -> Path:
    """The spec's root.path, relative to the bundle unless absolute."""
    root = (spec.get("root") or {}).get("path") or "rootfs"
    return Path(bundle) / root


def agent_spec(
    spec: Mapping[str, Any],
    guest_root: str,
    mounts: Mapping[int, Mapping[str, Any]] | None = None,
    *,
    vm: bool = True,
) -> oci_pb2.Spec:
    """`spec` as the agent's grpc.Spec, rooted at `guest_root`, constrained for a guest;
    `mounts` replaces spec mounts by index (volumes shared into the VM, task/volumes.py);
    `vm`: the agent runs in a VM (the pid entry is removed, `sandbox_pidns` decides)."""
    data = copy.deepcopy(dict(spec))
    data["root"] = {**(data.get("root") or {}), "path": guest_root}
    if mounts:
        data["mounts"] = [dict(mounts.get(i, m)) for i, m in enumerate(data.get("mounts") or [])]
    if data.pop("hooks", None):
        log.warning("OCI hooks are not run by this shim; dropped from the guest spec")
    linux = data.get("linux")
    if isinstance(linux, dict):
        cgroups_path = linux.pop("cgroupsPath", None)
        if not vm and isinstance(cgroups_path, str) and container_path(cgroups_path):
            linux["cgroupsPath"] = container_path(cgroups_path)
        linux["namespaces"] = [
            {"type": ns.get("type", "")}
            for ns in linux.get("namespaces") or []
            if ns.get("type") not in ("network", "cgroup", *(("pid",) if vm else ()))
        ]
    unknown: list[str] = []
    message = oci.spec_from_json(data, unknown)
    if unknown:
        log.debug("spec keys the agent protocol cannot carry: %s", ", ".join(unknown))
    return message


def _json_payload(payload: AnyMessage, what: str) -> Any:
    try:
        return json.loads(payload.value)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: not valid JSON: {exc}") from exc


def exec_process(payload: AnyMessage, terminal: bool) -> oci_pb2.Process:
    """Exec's JSON OCI Process (containerd and iSulad alike) as grpc.Process."""
    data = _json_payload(payload, "exec spec")
    if not isinstance(data, dict) or not data.get("args"):
        raise InvalidArgument("exec spec: a process with args is required")
    process = oci.process_from_json(data)
    process.Terminal = process.Terminal or terminal
    return process


def linux_resources(payload: AnyMessage) -> oci_pb2.LinuxResources:
    """Update's JSON OCI LinuxResources as grpc.LinuxResources."""
    data = _json_payload(payload, "update resources")
    if not isinstance(data, dict):
        raise InvalidArgument("update resources: a JSON object is required")
    return oci.resources_from_json(data)


_OPTION_TYPES = ("runtimeoptions.v1.Options", "cri.runtimeoptions.v1.Options")


def config_path(options: AnyMessage | None) -> str | None:
    """`config_path` of Create's runtime options (either Options type), if given."""
    if options is None or not options.type_url:
        return None
    if options.type_url.rsplit("/", 1)[-1] not in _OPTION_TYPES:
        return None
    parsed = runtimeoptions_pb2.Options()
    try:
        parse(parsed, options.value)
    except DecodeError as exc:
        raise InvalidArgument(f"cannot decode runtime options: {exc}") from exc
    return parsed.config_path or None
