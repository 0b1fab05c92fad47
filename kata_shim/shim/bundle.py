"""What the start/delete actions read from a bundle: the pod placement and the options.

* `sandbox_of(id, annotations)`: a *pod container* (CRI, CRI-O or dockershim
  annotations saying "container" plus a sandbox id) belongs to its sandbox's
  shim; anything else (a sandbox, or no annotations) is its own sandbox.
  kata_shim.task.spec.placement answers the same question inside the daemon;
  this copy exists because `start` must not import protobuf.
* `read_options(fd)`: the runtime options Any containerd writes on stdin
  (nothing when stdin is /dev/null or a tty), read to EOF with a bound.
"""

from __future__ import annotations

import json
import os
import select
import stat
import time
from collections.abc import Mapping

__all__ = ["POD_ANNOTATIONS", "BundleError", "Placement", "read_options", "sandbox_of", "spec_of"]

# (container-type key, sandbox-id key, value meaning "a container of an existing pod")
POD_ANNOTATIONS = (
    ("io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id", "container"),
    ("io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID", "container"),
    ("io.kubernetes.docker.type", "io.kubernetes.sandbox.id", "container"),
)
OPTIONS_LIMIT = 1 << 20


class BundleError(RuntimeError):
    """The bundle is unusable (no or bad config.json, contradictory annotations)."""


class Placement:
    """Which sandbox a task belongs to (a plain class: `typing`/`dataclasses` cost ms here)."""

    __slots__ = ("pod_container", "sandbox_id")

    def __init__(self, sandbox_id: str, pod_container: bool) -> None:
        self.sandbox_id = sandbox_id
        #: True for a container joining an existing pod: its shim is the sandbox's
        self.pod_container = pod_container

    def __repr__(self) -> str:
        return f"Placement({self.sandbox_id!r}, pod_container={self.pod_container})"


def spec_of(bundle: str) -> dict[str, object]:
    """The bundle's config.json as a dict."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as handle:
            spec = json.load(handle)
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise BundleError(f"{path} is not a JSON object")
    return spec


def annotations_of(spec: Mapping[str, object]) -> dict[str, str]:
    raw = spec.get("annotations") or {}
    if not isinstance(raw, dict):
        return {}
    return {str(key): str(value) for key, value in raw.items()}


def sandbox_of(task_id: str, annotations: Mapping[str, str]) -> Placement:
    """Which sandbox (and therefore which shim) `task_id` belongs to."""
    for type_key, id_key, container_value in POD_ANNOTATIONS:
        kind = annotations.get(type_key)
        if kind is None:
            continue
        if kind != container_value:
            return Placement(task_id, False)
        sandbox_id = annotations.get(id_key, "")
        if not sandbox_id:
            raise BundleError(f"container {task_id}: annotation {type_key} without {id_key}")
        return Placement(sandbox_id, sandbox_id != task_id)
    return Placement(task_id, False)


def _readable_stream(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:  # closed
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def read_options(fd: int = 0, timeout: float = 2.0) -> bytes:
    """Everything on `fd` until EOF (bounded), or b'' for /dev/null, a tty or a closed fd."""
    if not _readable_stream(fd):
        return b""
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + timeout
    while size < OPTIONS_LIMIT:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break  # a writer that never closes must not hang `start`
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
