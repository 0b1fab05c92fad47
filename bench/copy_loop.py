"""MB/s of copy_fd, Cython (kata_shim._fastio) vs pure Python (kata_shim.io.copy.py_copy_fd).

Paths measured: pipe→pipe (a writer thread feeds the source pipe, a reader thread drains
the destination), file→file (read/write), pipe→file, file→pipe, and
file→append (O_APPEND destination, read/write). Helper
threads use the compiled write_all/drain_into for both implementations, so they cost the
same. Files live in --dir (default: a temporary directory). Prints one JSON object:
best and median MB/s (1 MB = 10^6 bytes) over --repeat runs per path and implementation.

Run: `.venv/bin/python bench/copy_loop.py [--mib 256] [--repeat 5] [--dir DIR]`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kata_shim import _fastio
from kata_shim.io import copy

CopyFd = Callable[..., int]
IMPLS: dict[str, CopyFd] = {"cython": _fastio.copy_fd, "python": copy.py_copy_fd}


def _feeder(fd: int, data: bytes) -> threading.Thread:
    def run() -> None:
        _fastio.write_all(fd, data)
        os.close(fd)

    return threading.Thread(target=run)


def _drainer(fd: int) -> threading.Thread:
    def run() -> None:
        buf = bytearray()
        while _fastio.drain_into(fd, buf, 1 << 20):
            buf.clear()
        os.close(fd)

    return threading.Thread(target=run)


def _timed(copy_fd: CopyFd, src: int, dst: int, threads: list[threading.Thread]) -> float:
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    copy_fd(src, dst)
    return time.perf_counter() - started


def pipe_to_pipe(copy_fd: CopyFd, data: bytes, tmp: Path) -> float:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    threads = [_feeder(src_w, data), _drainer(dst_r)]
    try:
        return _timed(copy_fd, src_r, dst_w, threads)
    finally:
        os.close(dst_w)
        for thread in threads:
            thread.join()
        os.close(src_r)


def _file_to(copy_fd: CopyFd, data: bytes, tmp: Path, flags: int) -> float:
    source = tmp / "source"
    if not source.exists() or source.stat().st_size != len(data):
        source.write_bytes(data)
    src = os.open(source, os.O_RDONLY)
    dst = os.open(tmp / "sink", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o600)
    try:
        return _timed(copy_fd, src, dst, [])
    finally:
        os.close(src)
        os.close(dst)


def file_to_file(copy_fd: CopyFd, data: bytes, tmp: Path) -> float:
    return _file_to(copy_fd, data, tmp, 0)


def file_to_append(copy_fd: CopyFd, data: bytes, tmp: Path) -> float:
    return _file_to(copy_fd, data, tmp, os.O_APPEND)


def pipe_to_file(copy_fd: CopyFd, data: bytes, tmp: Path) -> float:
    src_r, src_w = os.pipe()
    dst = os.open(tmp / "sink", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    feeder = _feeder(src_w, data)
    try:
        return _timed(copy_fd, src_r, dst, [feeder])
    finally:
        feeder.join()
        os.close(src_r)
        os.close(dst)


def file_to_pipe(copy_fd: CopyFd, data: bytes, tmp: Path) -> float:
    source = tmp / "source"
    if not source.exists() or source.stat().st_size != len(data):
        source.write_bytes(data)
    src = os.open(source, os.O_RDONLY)
    dst_r, dst_w = os.pipe()
    drainer = _drainer(dst_r)
    try:
        return _timed(copy_fd, src, dst_w, [drainer])
    finally:
        os.close(dst_w)
        drainer.join()
        os.close(src)


PATHS: dict[str, Callable[[CopyFd, bytes, Path], float]] = {
    "pipe_to_pipe": pipe_to_pipe,
    "file_to_file": file_to_file,
    "pipe_to_file": pipe_to_file,
    "file_to_pipe": file_to_pipe,
    "file_to_append_rw_fallback": file_to_append,
}


def fs_type(path: Path) -> str:
    """The filesystem type of the mount holding path (from /proc/self/mountinfo)."""
    best, kind = "", "unknown"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point, fstype = fields[4], fields[fields.index("-") + 1]
        inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fstype
    return kind


def measure(data: bytes, tmp: Path, repeat: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for path, run in PATHS.items():
        results[path] = {}
        for name, copy_fd in IMPLS.items():
            rates = [len(data) / run(copy_fd, data, tmp) / 1e6 for _ in range(repeat)]
            results[path][name] = {
                "best_MBps": round(max(rates)),
                "median_MBps": round(statistics.median(rates)),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="bytes per copy, in MiB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    data = os.urandom(args.mib << 20)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = measure(data, Path(tmp), args.repeat)
        fs = fs_type(Path(tmp).resolve())
    report = {
        "mib": args.mib,
        "repeat": args.repeat,
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "files_on": fs,
        "results": results,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
