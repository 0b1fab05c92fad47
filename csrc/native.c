/* kata-shim native helpers: poll and AF_VSOCK, one syscall-shaped step each.
 *
 * Small on purpose: policy (validation, deadlines, EINTR retries, socket objects)
 * lives in the kata_shim.native wrappers, which have a pure-Python twin for every function
 * here. Conventions in native.h: >= 0 on success, -errno on failure, CLOEXEC fds. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "native.h"

int ks_poll_one(int fd, int events, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = (short)events, .revents = 0 };
    int n = poll(&p, 1, timeout_ms);
    if (n < 0)
        return -errno;
    return n == 0 ? -ETIMEDOUT : p.revents;
}

static void vsock_addr(struct sockaddr_vm *addr, uint32_t cid, uint32_t port)
{
    memset(addr, 0, sizeof(*addr));
    addr->svm_family = AF_VSOCK;
    addr->svm_cid = cid;
    addr->svm_port = port;
}

/* A non-blocking socket whose connect is done or in progress (EINPROGRESS/EINTR). */
int ks_vsock_connect_start(uint32_t cid, uint32_t port)
{
    struct sockaddr_vm addr;
    int rc, fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    vsock_addr(&addr, cid, port);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 && errno != EINPROGRESS &&
        errno != EINTR) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

/* After poll said writable: the connect's outcome (SO_ERROR); on success fd turns blocking. */
int ks_vsock_connect_finish(int fd)
{
    int soerr = 0, flags;
    socklen_t len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return -errno;
    if (soerr)
        return -soerr;
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

int ks_vsock_listen(uint32_t cid, uint32_t port, int backlog)
{
    struct sockaddr_vm addr;
    int rc, fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    vsock_addr(&addr, cid, port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, backlog) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

/* One accept4(2): a blocking CLOEXEC fd plus the peer's address. */
int ks_vsock_accept(int fd, uint32_t *peer_cid, uint32_t *peer_port)
{
    struct sockaddr_vm addr;
    socklen_t len = sizeof(addr);
    int conn;
    memset(&addr, 0, sizeof(addr));
    conn = accept4(fd, (struct sockaddr *)&addr, &len, SOCK_CLOEXEC);
    if (conn < 0)
        return -errno;
    *peer_cid = addr.svm_cid;
    *peer_port = addr.svm_port;
    return conn;
}
