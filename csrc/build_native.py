"""cffi (API mode) build of kata_shim._native from csrc/native.c.

Used by setup.py (`cffi_modules=["csrc/build_native.py:ffibuilder"]`); run
directly (`python csrc/build_native.py` from the repo root) to build the module
in place for development.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef(
    """
    int ks_epoll_create(int cloexec);
    int ks_epoll_ctl(int epfd, int op, int fd, uint32_t events);
    int ks_epoll_wait(int epfd, int *fds, uint32_t *events, int maxevents, int timeout_ms);
    int ks_vsock_connect(uint32_t cid, uint32_t port, int timeout_ms);
    int ks_vsock_listen(uint32_t cid, uint32_t port, int backlog);
    int ks_vsock_accept(int fd, int timeout_ms, uint32_t *peer_cid, uint32_t *peer_port);
    """
)


def configure(root: str = "") -> None:
    """Declare the module; `root` prefixes the source paths (setup.py runs from the repo)."""
    prefix = f"{root}/" if root else ""
    ffibuilder.set_source(
        "kata_shim._native",
        '#include "native.h"',
        sources=[f"{prefix}csrc/native.c"],
        include_dirs=[f"{prefix}csrc"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    )


# setup.py imports this module from the repo root and wants relative paths;
# run as a script, ffi.compile() changes directory, so paths must be absolute.
configure(str(HERE.parent) if __name__ == "__main__" else "")

if __name__ == "__main__":
    import os

    os.chdir(HERE.parent)
    ffibuilder.compile(tmpdir="build/cffi", verbose=False)
    built = sorted(Path("build/cffi/kata_shim").glob("_native*.so"))
    for so in built:
        so.replace(Path("kata_shim") / so.name)
    print("built", [str(Path("kata_shim") / so.name) for so in built])
