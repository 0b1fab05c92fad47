"""cffi (API mode) build of kata_shim._native from csrc/native.c.

Two ways in:
* setup.py: `cffi_modules=["csrc/build_native.py:ffibuilder"]` runs this file with the
  repository (or unpacked sdist) as the working directory; the sources are given relative
  to it, as setuptools wants. Used by `pip install -e . --no-build-isolation` and by
  `python -m build --wheel --no-isolation`.
* In place, for development (from any directory):
      .venv/bin/python csrc/build_native.py
  compiles in build/cffi-inplace/ and moves kata_shim/_native*.so next to the sources.
The cdef repeats csrc/native.h (cffi cannot parse preprocessor directives).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
MODULE = "kata_shim._native"
CDEF = """
int ks_poll_one(int fd, int events, int timeout_ms);
int ks_vsock_connect_start(uint32_t cid, uint32_t port);
int ks_vsock_connect_finish(int fd);
int ks_vsock_listen(uint32_t cid, uint32_t port, int backlog);
int ks_vsock_accept(int fd, uint32_t *peer_cid, uint32_t *peer_port);
"""


def make_builder(absolute: bool) -> FFI:
    """The FFI builder; source paths absolute (in-place build) or relative to the cwd."""
    csrc = ROOT / "csrc"
    if not absolute:
        csrc = Path(os.path.relpath(csrc))
    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(
        MODULE,
        '#include "native.h"',
        sources=[str(csrc / "native.c")],
        include_dirs=[str(csrc)],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    )
    return builder


def build_in_place() -> list[Path]:
    """Compile into build/cffi-inplace, then move the module into kata_shim/ (over stale ones)."""
    tmpdir = ROOT / "build" / "cffi-inplace"
    # cffi's C targets the limited API, and setup.py names the module .abi3.so: do the same,
    # or a stale in-place build would shadow a newer setup.py one (or the other way round)
    name = "_native.abi3.so"
    builder = make_builder(absolute=True)
    built = Path(builder.compile(tmpdir=str(tmpdir), target=name, verbose=False))
    target = ROOT / "kata_shim" / name
    for stale in target.parent.glob("_native.*so"):
        if stale.name != name:
            stale.unlink()
    built.replace(target)
    return [target]


ffibuilder = make_builder(absolute=False)

if __name__ == "__main__":
    for path in build_in_place():
        print(f"built {path}", file=sys.stderr)
