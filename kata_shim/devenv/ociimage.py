"""OCI image tarballs built from busybox-static, for tests that cannot pull from a registry.

`write_image(path, name, entrypoint=..., cmd=...)` writes an OCI image layout
archive (oci-layout, index.json, one manifest, one config, one gzip layer
holding a busybox rootfs) that `ctr images import` accepts; the image is named
by the `io.containerd.image.name` annotation. Archives are reproducible:
fixed timestamps and owners, sorted entries, so the same busybox gives the
same digests. `PAUSE` is a sandbox image whose process exits on TERM or INT
(busybox sh, waiting on a sleep); `BUSYBOX` runs `sh` by default.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BUSYBOX", "PAUSE", "ImageSpec", "layer_tar", "write_image"]

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
DIRS = ("bin", "dev", "etc", "proc", "root", "run", "sys", "tmp", "usr", "var")
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"


@dataclass(frozen=True)
class ImageSpec:
    """A busybox image: its full reference and its process."""

    name: str
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


PAUSE = ImageSpec("kata-shim.test/pause:1", entrypoint=("/bin/sh", "-c", PAUSE_SCRIPT))
BUSYBOX = ImageSpec("kata-shim.test/busybox:1", cmd=("/bin/sh",))


def _info(name: str, kind: bytes, mode: int, **extra: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    for key, value in extra.items():
        setattr(info, key, value)
    return info


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    tar.addfile(_info(name, tarfile.REGTYPE, mode, size=len(data)), io.BytesIO(data))


def layer_tar(busybox: str = "/bin/busybox") -> bytes:
    """An uncompressed tar of a busybox rootfs (busybox, applet symlinks, passwd, group)."""
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in DIRS:
            tar.addfile(_info(name, tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755))
        _add_file(tar, "bin/busybox", Path(busybox).read_bytes(), 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            tar.addfile(_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, linkname="busybox"))
        tar.addfile(_info("sbin", tarfile.SYMTYPE, 0o777, linkname="bin"))
        tar.addfile(_info("usr/bin", tarfile.SYMTYPE, 0o777, linkname="../bin"))
        _add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add_file(tar, "etc/group", b"root:x:0:\n")
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _config(spec: ImageSpec, diff_id: str) -> bytes:
    process: dict[str, Any] = {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/"}
    if spec.entrypoint:
        process["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        process["Cmd"] = list(spec.cmd)
    return _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": process,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    )


def _descriptor(media_type: str, data: bytes, **annotations: str) -> dict[str, Any]:
    desc: dict[str, Any] = {"mediaType": media_type, "digest": _digest(data), "size": len(data)}
    if annotations:
        desc["annotations"] = annotations
    return desc


def write_image(path: Path, spec: ImageSpec, *, busybox: str = "/bin/busybox") -> Path:
    """Write the OCI archive of `spec` to `path` (what `ctr images import` reads)."""
    layer = layer_tar(busybox)
    layer_gz = gzip.compress(layer, mtime=0)
    config = _config(spec, _digest(layer))
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": _descriptor(CONFIG_TYPE, config),
            "layers": [_descriptor(LAYER_TYPE, layer_gz)],
        }
    )
    tag = spec.name.rpartition(":")[2]
    entry = _descriptor(
        MANIFEST_TYPE, manifest, **{NAME_ANNOTATION: spec.name, REF_ANNOTATION: tag}
    )
    index = _json({"schemaVersion": 2, "manifests": [entry]})
    blobs: Sequence[bytes] = (layer_gz, config, manifest)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_file(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add_file(tar, "index.json", index)
        for blob in blobs:
            _add_file(tar, f"blobs/sha256/{_digest(blob).removeprefix('sha256:')}", blob)
    return path
