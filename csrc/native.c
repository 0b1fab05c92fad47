/* kata-shim native helpers: epoll and AF_VSOCK with timeouts.
 * Small and syscall-shaped on purpose: policy lives in Python. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "native.h"

int ks_epoll_create(int cloexec)
{
    int fd = epoll_create1(cloexec ? EPOLL_CLOEXEC : 0);
    return fd < 0 ? -errno : fd;
}

int ks_epoll_ctl(int epfd, int op, int fd, uint32_t events)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.fd = fd;
    return epoll_ctl(epfd, op, fd, &ev) < 0 ? -errno : 0;
}

int ks_epoll_wait(int epfd, int *fds, uint32_t *events, int maxevents, int timeout_ms)
{
    struct epoll_event evs[256];
    int n;
    if (maxevents <= 0)
        return -EINVAL;
    if (maxevents > 256)
        maxevents = 256;
    do {
        n = epoll_wait(epfd, evs, maxevents, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        fds[i] = evs[i].data.fd;
        events[i] = evs[i].events;
    }
    return n;
}

static void vsock_addr(struct sockaddr_vm *addr, uint32_t cid, uint32_t port)
{
    memset(addr, 0, sizeof(*addr));
    addr->svm_family = AF_VSOCK;
    addr->svm_cid = cid;
    addr->svm_port = port;
}

/* Wait until fd is ready for `events` within timeout_ms (-1 = forever). */
static int wait_ready(int fd, short events, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = events };
    int n;
    do {
        n = poll(&p, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return n == 0 ? -ETIMEDOUT : 0;
}

int ks_vsock_connect(uint32_t cid, uint32_t port, int timeout_ms)
{
    struct sockaddr_vm addr;
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int rc = 0, soerr = 0;
    socklen_t len = sizeof(soerr);
    if (fd < 0)
        return -errno;
    vsock_addr(&addr, cid, port);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto fail;
        }
        rc = wait_ready(fd, POLLOUT, timeout_ms);
        if (rc < 0)
            goto fail;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0 || soerr) {
            rc = soerr ? -soerr : -errno;
            goto fail;
        }
    }
    /* hand back a blocking fd; callers set their own mode */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
fail:
    close(fd);
    return rc;
}

int ks_vsock_listen(uint32_t cid, uint32_t port, int backlog)
{
    struct sockaddr_vm addr;
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc;
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

int ks_vsock_accept(int fd, int timeout_ms, uint32_t *peer_cid, uint32_t *peer_port)
{
    struct sockaddr_vm addr;
    socklen_t len = sizeof(addr);
    int conn, rc = wait_ready(fd, POLLIN, timeout_ms);
    if (rc < 0)
        return rc;
    do {
        conn = accept4(fd, (struct sockaddr *)&addr, &len, SOCK_CLOEXEC);
    } while (conn < 0 && errno == EINTR);
    if (conn < 0)
        return -errno;
    *peer_cid = addr.svm_cid;
    *peer_port = addr.svm_port;
    return conn;
}
