"""kata_shim.devenv.ociimage: OCI image archives from busybox-static (no containerd needed)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from kata_shim.devenv import ociimage


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _blob(files: dict[str, bytes], digest: str) -> bytes:
    data = files[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def test_archive_is_a_valid_oci_layout(tmp_path: Path) -> None:
    files = _members(ociimage.write_image(tmp_path / "pause.tar", ociimage.PAUSE))
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    [entry] = json.loads(files["index.json"])["manifests"]
    assert entry["mediaType"] == ociimage.MANIFEST_TYPE
    assert entry["annotations"][ociimage.NAME_ANNOTATION] == "kata-shim.test/pause:1"
    manifest = json.loads(_blob(files, entry["digest"]))
    assert len(_blob(files, entry["digest"])) == entry["size"]
    config = json.loads(_blob(files, manifest["config"]["digest"]))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == ociimage.LAYER_TYPE
    plain = gzip.decompress(_blob(files, layer["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(plain).hexdigest()]
    assert config["config"]["Entrypoint"][:2] == ["/bin/sh", "-c"]
    assert "trap 'exit 0' TERM INT" in config["config"]["Entrypoint"][2]
    with tarfile.open(fileobj=io.BytesIO(plain)) as rootfs:
        names = {m.name: m for m in rootfs.getmembers()}
    assert names["bin/busybox"].mode == 0o755 and names["bin/sh"].linkname == "busybox"
    assert names["tmp"].mode == 0o1777 and names["etc/passwd"].isfile()


def test_archives_are_reproducible(tmp_path: Path) -> None:
    one = ociimage.write_image(tmp_path / "a.tar", ociimage.BUSYBOX).read_bytes()
    two = ociimage.write_image(tmp_path / "b.tar", ociimage.BUSYBOX).read_bytes()
    assert one == two
    config = [
        json.loads(data)
        for name, data in _members(tmp_path / "a.tar").items()
        if name.startswith("blobs/") and data.startswith(b'{"architecture"')
    ]
    assert config[0]["config"]["Cmd"] == ["/bin/sh"] and "Entrypoint" not in config[0]["config"]


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_pause_process_exits_on_term_and_int(sig: signal.Signals) -> None:
    """The pause entrypoint, run by busybox sh on the host in a process group of its own."""
    argv = ["/bin/busybox", "sh", *ociimage.PAUSE.entrypoint[1:]]
    # With the default dispositions a container's init gets: a shell cannot trap a signal
    # that was ignored when it started (POSIX), and a job run by a non-interactive shell
    # with `&` (as CI may run us) starts with SIGINT ignored.
    proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=_default_signals)
    try:
        time.sleep(0.5)  # let the shell install its trap
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its sleep child
        if proc.poll() is None:
            proc.wait()
