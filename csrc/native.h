/* kata-shim native helpers (cffi API mode module kata_shim._native).
 * Every function returns >= 0 on success and -errno on failure; the Python
 * wrappers in kata_shim/native/ turn that into OSError. All fds are CLOEXEC. */
#ifndef KATA_SHIM_NATIVE_H
#define KATA_SHIM_NATIVE_H
#include <stdint.h>

int ks_epoll_create(int cloexec);
int ks_epoll_ctl(int epfd, int op, int fd, uint32_t events);
int ks_epoll_wait(int epfd, int *fds, uint32_t *events, int maxevents, int timeout_ms);

int ks_vsock_connect(uint32_t cid, uint32_t port, int timeout_ms);
int ks_vsock_listen(uint32_t cid, uint32_t port, int backlog);
int ks_vsock_accept(int fd, int timeout_ms, uint32_t *peer_cid, uint32_t *peer_port);

#endif
