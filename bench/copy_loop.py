"""MB/s of copy_fd (Cython vs pure Python): pipe→pipe with thread peers, and file→file.

Prints JSON. Run: `.venv/bin/python bench/copy_loop.py [--mib N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable

from kata_shim import _fastio
from kata_shim.io import copy

IMPLS: dict[str, Callable[..., int]] = {"cython": _fastio.copy_fd, "python": copy.py_copy_fd}


def pipe_to_pipe(copy_fd: Callable[..., int], data: bytes) -> float:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()

    def produce() -> None:
        _fastio.write_all(src_w, data)
        os.close(src_w)

    def consume() -> None:
        buf = bytearray()
        while _fastio.drain_into(dst_r, buf, 1 << 20):
            buf.clear()

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    copy_fd(src_r, dst_w)
    os.close(dst_w)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    os.close(src_r)
    os.close(dst_r)
    return len(data) / elapsed / 1e6


def file_to_file(copy_fd: Callable[..., int], data: bytes, tmp: str) -> float:
    source = os.path.join(tmp, "src")
    with open(source, "wb") as f:
        f.write(data)
    with open(source, "rb") as src, open(os.path.join(tmp, "dst"), "wb") as dst:
        started = time.perf_counter()
        copy_fd(src.fileno(), dst.fileno())
        elapsed = time.perf_counter() - started
    return len(data) / elapsed / 1e6


def pipe_to_file(copy_fd: Callable[..., int], data: bytes, tmp: str) -> float:
    src_r, src_w = os.pipe()

    def produce() -> None:
        _fastio.write_all(src_w, data)
        os.close(src_w)

    thread = threading.Thread(target=produce)
    with open(os.path.join(tmp, "sink"), "wb") as dst:
        started = time.perf_counter()
        thread.start()
        copy_fd(src_r, dst.fileno())
        elapsed = time.perf_counter() - started
    thread.join()
    os.close(src_r)
    return len(data) / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    data = os.urandom(args.mib << 20)
    result: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, impl in IMPLS.items():
            result[name] = {
                "pipe_to_pipe_MBps": round(max(pipe_to_pipe(impl, data) for _ in range(3))),
                "file_to_file_MBps": round(max(file_to_file(impl, data, tmp) for _ in range(3))),
                "pipe_to_file_MBps": round(max(pipe_to_file(impl, data, tmp) for _ in range(3))),
            }
    print(json.dumps({"mib": args.mib, **result}))


if __name__ == "__main__":
    main()
