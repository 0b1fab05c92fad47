# cython: language_level=3, boundscheck=False, wraparound=False
"""The hot stdio copy loop, compiled: same API and semantics as kata_shim/io/copy.py.

Rules (shared with the pure-Python twin, which tests/io/test_copy.py runs on the
same cases): copy_fd splices only from a non-pipe into a pipe (file/socket → FIFO)
and falls back to read/write when splice(2) says EINVAL/ENOSYS for these fds;
every other pairing uses read/write with one large buffer; every syscall loop runs without the GIL; EINTR runs the Python signal
handlers (PEP 475: a raising handler aborts the call) and retries; EAGAIN on a
non-blocking fd waits with poll(); errors raise OSError(errno). Measured on a 2-CPU
host (bench/copy_loop.py): splice wins file→pipe but loses pipe→file and pipe→pipe to
read/write when a writer fills the source pipe concurrently, hence the policy.
"""

import os

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EAGAIN, EINTR, EINVAL, ENOSYS, errno
from libc.stdlib cimport free, malloc
from posix.stat cimport S_ISFIFO, fstat, struct_stat
from posix.unistd cimport read, write

cdef extern from "<fcntl.h>" nogil:
    ssize_t splice(int fd_in, void *off_in, int fd_out, void *off_out, size_t n, unsigned int flags)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLIN
    enum: POLLOUT

IMPLEMENTATION = "cython"

cdef enum:
    UNSUPPORTED = -2  # splice(2) refused these fds: use read/write


cdef struct Copy:
    int src
    int dst
    long long limit  # < 0: until EOF
    long long total  # bytes written to dst so far
    size_t bufsize
    char *buf  # read/write buffer, allocated on first use


cdef int _signals() except -1 with gil:
    PyErr_CheckSignals()
    return 0


cdef int _oserror(int err) except -1 with gil:
    raise OSError(err, os.strerror(err))


cdef int _nomemory() except -1 with gil:
    raise MemoryError()


cdef int _wait(int fd, short events) except -1 nogil:
    """Block until fd is ready for events (or has an error/hangup to report)."""
    cdef pollfd p
    p.fd = fd
    p.events = events
    p.revents = 0
    while poll(&p, 1, -1) < 0:
        if errno != EINTR:
            return _oserror(errno)
        _signals()
    return 0


cdef bint _ready(int fd, short events) noexcept nogil:
    cdef pollfd p
    p.fd = fd
    p.events = events
    p.revents = 0
    return poll(&p, 1, 0) != 0  # a poll error counts as ready: the retry reports it


cdef int _wait_splice(int src, int dst) except -1 nogil:
    """splice said EAGAIN: wait for whichever side blocked it (dst full, else src empty)."""
    if not _ready(dst, POLLOUT):
        return _wait(dst, POLLOUT)
    return _wait(src, POLLIN)


cdef int _write_all(int fd, const char *buf, size_t n) except -1 nogil:
    cdef size_t done = 0
    cdef ssize_t w
    cdef int err
    while done < n:
        w = write(fd, buf + done, n - done)
        if w >= 0:
            done += w
            continue
        err = errno
        if err == EINTR:
            _signals()
        elif err == EAGAIN:
            _wait(fd, POLLOUT)
        else:
            return _oserror(err)
    return 0


cdef ssize_t _read(int fd, char *buf, size_t n) except -1 nogil:
    """One read (EINTR retried, EAGAIN waited out); 0 at EOF."""
    cdef ssize_t r
    cdef int err
    while True:
        r = read(fd, buf, n)
        if r >= 0:
            return r
        err = errno
        if err == EINTR:
            _signals()
        elif err == EAGAIN:
            _wait(fd, POLLIN)
        else:
            return _oserror(err)


cdef ssize_t _splice(int src, int dst, size_t n) except -1 nogil:
    """One splice (EINTR retried, EAGAIN waited out); 0 at EOF; UNSUPPORTED on EINVAL/ENOSYS."""
    cdef ssize_t r
    cdef int err
    while True:
        r = splice(src, NULL, dst, NULL, n, 0)
        if r >= 0:
            return r
        err = errno
        if err == EINTR:
            _signals()
        elif err == EAGAIN:
            _wait_splice(src, dst)
        elif err == EINVAL or err == ENOSYS:
            return UNSUPPORTED
        else:
            return _oserror(err)


cdef size_t _want(Copy *c) noexcept nogil:
    if c.limit < 0 or c.limit - c.total > <long long>c.bufsize:
        return c.bufsize
    return <size_t>(c.limit - c.total)


cdef bint _more(Copy *c) noexcept nogil:
    return c.limit < 0 or c.total < c.limit


cdef int _is_pipe(int fd) except -1 nogil:
    cdef struct_stat st
    if fstat(fd, &st) < 0:
        return _oserror(errno)
    return 1 if S_ISFIFO(st.st_mode) else 0


cdef int _alloc(Copy *c) except -1 nogil:
    if c.buf == NULL:
        c.buf = <char *>malloc(c.bufsize)
        if c.buf == NULL:
            return _nomemory()
    return 0


cdef int _copy_rw(Copy *c) except -1 nogil:
    cdef ssize_t got
    _alloc(c)
    while _more(c):
        got = _read(c.src, c.buf, _want(c))
        if got == 0:
            break
        _write_all(c.dst, c.buf, got)
        c.total += got
    return 0


cdef int _splice_direct(Copy *c) except -1 nogil:
    """dst is a pipe, src is not. Returns 1 when splice is unsupported (nothing was moved)."""
    cdef ssize_t moved
    while _more(c):
        moved = _splice(c.src, c.dst, _want(c))
        if moved == UNSUPPORTED:
            return 1
        if moved == 0:
            break
        c.total += moved
    return 0


cdef int _copy(Copy *c) except -1 nogil:
    cdef int fallback
    if c.limit == 0:
        return 0
    if _is_pipe(c.dst) and not _is_pipe(c.src):
        if not _splice_direct(c):
            return 0
    _copy_rw(c)
    return 0


def copy_fd(int src_fd, int dst_fd, long long limit=-1, Py_ssize_t bufsize=1 << 20):
    """Copy src → dst until EOF (or `limit` bytes, < 0 = no limit); return the byte count."""
    if bufsize <= 0:
        raise ValueError("bufsize must be positive")
    cdef Copy c
    c.src, c.dst = src_fd, dst_fd
    c.limit, c.total, c.bufsize, c.buf = limit, 0, <size_t>bufsize, NULL
    try:
        with nogil:
            _copy(&c)
    finally:
        free(c.buf)
    return c.total


def write_all(int fd, data):
    """Write all of `data` (bytes-like); return its length."""
    cdef const unsigned char[::1] view = memoryview(data).cast("B")
    cdef size_t n = view.shape[0]
    if n:
        with nogil:
            _write_all(fd, <const char *>&view[0], n)
    return n


cdef ssize_t _read_once(int fd, char *buf, size_t n) except -1:
    """One read() without the GIL, like os.read: EINTR runs signal handlers and retries."""
    cdef ssize_t r
    cdef int err
    while True:
        with nogil:
            r = read(fd, buf, n)
            err = errno
        if r >= 0:
            return r
        if err != EINTR:
            raise OSError(err, os.strerror(err))
        PyErr_CheckSignals()


def read_some(int fd, Py_ssize_t maxlen):
    """One read() of up to maxlen bytes; b"" at EOF; BlockingIOError on EAGAIN."""
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0")
    out = PyBytes_FromStringAndSize(NULL, maxlen)
    cdef ssize_t r = _read_once(fd, PyBytes_AS_STRING(out), maxlen)
    return out if r == maxlen else out[:r]


def drain_into(int fd, bytearray buf, Py_ssize_t maxlen):
    """Append one read() of up to maxlen bytes to buf, read in place; return the count (0 = EOF)."""
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0")
    cdef Py_ssize_t start = len(buf)
    cdef ssize_t r
    cdef int err
    cdef char *p
    while True:
        PyByteArray_Resize(buf, start + maxlen)
        p = PyByteArray_AS_STRING(buf) + start  # re-taken each time: a signal handler may run
        with nogil:
            r = read(fd, p, maxlen)
            err = errno
        if r >= 0:
            PyByteArray_Resize(buf, start + r)
            return r
        PyByteArray_Resize(buf, start)
        if err != EINTR:
            raise OSError(err, os.strerror(err))
        PyErr_CheckSignals()
