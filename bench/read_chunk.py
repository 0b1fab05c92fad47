"""Reads/s of one stdio chunk read: kata_shim._fastio.read_some vs os.read, maxlen 1 MiB.

What the stdio hot path does per chunk: the guest agent reads a process's pipe for each
ReadStdout/ReadStderr (up to 1 MiB), the host stdin pump reads the client's FIFO. A
writer puts `size` bytes in a 1 MiB pipe, then one read of up to 1 MiB takes them; only
the read is timed. Each measurement runs in a fresh interpreter, since glibc's malloc
changes regime for good once a process frees one large mmap'd block: os.read is
measured both ways, "os.read" as a fresh process sees it (each 1 MiB buffer is an
mmap) and "os.read_heap" after one 1 MiB block was freed (the heap serves it).
Prints one JSON object: best-of-`--repeat` reads/s per size and implementation, and
read_some's speed-up over each. Run: `.venv/bin/python bench/read_chunk.py [--reads N]`
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

MAXLEN = 1 << 20
SIZES = (16, 4096, 65536, 1 << 20)
IMPLS = ("read_some", "os.read", "os.read_heap")


def reads_per_second(impl: str, size: int, reads: int) -> float:
    """In this process: `reads` timed reads of `size` bytes, one at a time."""
    if impl == "read_some":
        from kata_shim._fastio import read_some as read
    else:
        read = os.read
        if impl == "os.read_heap":
            block = os.urandom(MAXLEN)  # a freed 1 MiB block raises glibc's mmap threshold
            del block
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, MAXLEN)
        data, spent = b"x" * size, 0.0
        for _ in range(reads):
            os.write(w, data)
            began = time.perf_counter()
            got = read(r, MAXLEN)
            spent += time.perf_counter() - began
            assert len(got) == size
        return reads / spent
    finally:
        os.close(r)
        os.close(w)


def measure(impl: str, size: int, reads: int) -> float:
    args = [sys.executable, __file__, "--one", impl, str(size), "--reads", str(reads)]
    return float(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("IMPL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(reads_per_second(args.one[0], int(args.one[1]), args.reads))
        return
    results: dict[str, Any] = {}
    for size in SIZES:
        best = {i: max(measure(i, size, args.reads) for _ in range(args.repeat)) for i in IMPLS}
        results[str(size)] = {
            **{f"{impl}_per_s": round(rate) for impl, rate in best.items()},
            "speedup_vs_os.read": round(best["read_some"] / best["os.read"], 2),
            "speedup_vs_os.read_heap": round(best["read_some"] / best["os.read_heap"], 2),
        }
    host = {"cpus": os.cpu_count(), "kernel": platform.release()}
    print(json.dumps({"benchmark": "read_chunk", "host": host, "maxlen": MAXLEN, **results}))


if __name__ == "__main__":
    main()
