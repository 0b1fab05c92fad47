# cython: language_level=3, boundscheck=False, wraparound=False
"""The stdio read step, compiled: `read_some`, one read() of up to maxlen bytes into bytes.

It runs on both ends of the stdio hot path: in the guest agent, each ReadStdout/
ReadStderr chunk is read from the process's pipe (or pty) with it; on the host, the
stdin pump reads the client's FIFO with it. Semantics are os.read's (b"" at EOF,
BlockingIOError on EAGAIN, EINTR runs the signal handlers and retries, PEP 475); the
pure-Python twin in kata_shim/io/copy.py is os.read itself.

Why compiled: os.read allocates the whole `maxlen` (1 MiB on our path) for every
call and shrinks the result afterwards; glibc serves such a block with mmap/munmap
and the shrink with mremap. read_some first asks the kernel how much is waiting
(FIONREAD: pipes, FIFOs, ptys, sockets, files) and allocates exactly that (at most
maxlen), so a chunk is read straight into a bytes object of its final size: no
large allocation, no shrink, no copy. When nothing is waiting yet (or at EOF) it
reads into at most IDLE_READ bytes; where FIONREAD is not supported, into maxlen.
bench/read_chunk.py (loaded 2-CPU host, best of 3, reads/s of read_some over
os.read in a fresh process / after glibc raised its mmap threshold): 16 B 51x / 1.5x,
4 KiB 15x / 17x, 64 KiB 6x / 0.9x, 1 MiB 1.1x / 1.0x.
"""

import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from posix.unistd cimport read

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)
    enum: FIONREAD

IMPLEMENTATION = "cython"

cdef enum:
    IDLE_READ = 65536  # bytes asked when FIONREAD says nothing is waiting (EOF, or not yet)


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


cdef Py_ssize_t _size_for(int fd, Py_ssize_t maxlen) noexcept nogil:
    """How much to allocate: what is waiting (<= maxlen), IDLE_READ if nothing, else maxlen."""
    cdef int waiting = 0
    if ioctl(fd, FIONREAD, &waiting) != 0 or waiting < 0:
        return maxlen  # not a pipe, pty, socket or file: the caller's size
    if waiting == 0:
        return maxlen if maxlen < IDLE_READ else IDLE_READ
    return maxlen if waiting > maxlen else waiting


def read_some(int fd, Py_ssize_t maxlen):
    """One read() of up to maxlen bytes; b"" at EOF; BlockingIOError on EAGAIN."""
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0")
    cdef Py_ssize_t size = _size_for(fd, maxlen) if maxlen else 0
    out = PyBytes_FromStringAndSize(NULL, size)
    cdef ssize_t r = _read_once(fd, PyBytes_AS_STRING(out), size)
    return out if r == size else out[:r]
