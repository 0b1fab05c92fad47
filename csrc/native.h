/* kata-shim native helpers: the C side of the cffi API-mode module kata_shim._native.
 *
 * Every function is one syscall-shaped step and returns >= 0 on success or -errno on
 * failure (thread-safe: no errno handoff); the Python wrappers in kata_shim/native/ turn
 * that into OSError and own all policy: argument validation, timeouts as deadlines, and
 * EINTR (returned, never retried here, so Python signal handlers run between steps).
 * Every fd created here is CLOEXEC. build_native.py repeats these prototypes for cdef. */
#ifndef KATA_SHIM_NATIVE_H
#define KATA_SHIM_NATIVE_H
#include <stdint.h>

/* one poll(2) on one fd: revents (> 0), -ETIMEDOUT, or -errno (-EINTR included) */
int ks_poll_one(int fd, int events, int timeout_ms);

/* AF_VSOCK stream sockets */
int ks_vsock_connect_start(uint32_t cid, uint32_t port);
int ks_vsock_connect_finish(int fd);
int ks_vsock_listen(uint32_t cid, uint32_t port, int backlog);
int ks_vsock_accept(int fd, uint32_t *peer_cid, uint32_t *peer_port);

#endif
