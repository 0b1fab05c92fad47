"""Reads/s of one stdio chunk read: kata_shim._fastio.read_some vs os.read, maxlen 1 MiB.

What the stdio hot path does per chunk: the guest agent reads a process's pipe for each
ReadStdout/ReadStderr (up to 1 MiB), the host stdin pump reads the client's FIFO. A
writer puts `size` bytes in a 1 MiB pipe, then one read of up to 1 MiB takes them; only
the read is timed. Prints one JSON object: best-of-`--repeat` reads/s per size and
implementation, and the speed-up of read_some. Run:
`.venv/bin/python bench/read_chunk.py [--reads 3000] [--repeat 3]`
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from kata_shim import _fastio

MAXLEN = 1 << 20
SIZES = (16, 4096, 65536, 1 << 20)
IMPLS: dict[str, Callable[[int, int], bytes]] = {
    "read_some": _fastio.read_some,
    "os.read": os.read,
}


def reads_per_second(read: Callable[[int, int], bytes], size: int, reads: int) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for size in SIZES:
        best = {
            name: max(reads_per_second(read, size, args.reads) for _ in range(args.repeat))
            for name, read in IMPLS.items()
        }
        results[str(size)] = {
            **{f"{name}_per_s": round(rate) for name, rate in best.items()},
            "speedup": round(best["read_some"] / best["os.read"], 2),
        }
    host = {"cpus": os.cpu_count(), "kernel": platform.release()}
    print(json.dumps({"benchmark": "read_chunk", "host": host, "maxlen": MAXLEN, **results}))


if __name__ == "__main__":
    main()
