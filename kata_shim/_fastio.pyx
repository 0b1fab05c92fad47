# cython: language_level=3, boundscheck=False, wraparound=False
"""The stdio read step, compiled: `read_some`, one read() of up to maxlen bytes into bytes.

It runs on both ends of the stdio hot path: in the guest agent, each ReadStdout/
ReadStderr chunk is read from the process's pipe (or pty) with it; on the host, the
stdin pump reads the client's FIFO with it. Semantics are os.read's (b"" at EOF,
BlockingIOError on EAGAIN, EINTR runs the signal handlers and retries, PEP 475); the
pure-Python twin in kata_shim/io/copy.py is os.read itself. Why compiled: os.read
asks malloc for the whole `maxlen` (1 MiB here) and shrinks the result in place;
this copies a short read out and frees the large buffer. Measured with
bench/read_chunk.py (loaded 2-CPU host, maxlen 1 MiB, 3 runs): 4 KiB chunks 4-14x
the reads/s of os.read, 1 MiB chunks 0.84-1.0x, 64 KiB chunks 0.6-0.74x (the copy);
16-byte chunks 1.0-19x, depending on whether glibc has already raised its mmap
threshold.
"""

import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from posix.unistd cimport read

IMPLEMENTATION = "cython"


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
