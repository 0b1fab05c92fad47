# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled ttrpc frame decoder: same API and semantics as wire.PyFrameDecoder.

Keeps a read offset into one bytearray instead of deleting consumed bytes per
frame (compacting only when the consumed prefix is large), and decodes the
big-endian header with plain C arithmetic.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_FromStringAndSize

from kata_shim.ttrpc.wire import (
    NEED_DATA,
    Frame,
    OversizeFrame,
    ProtocolError,
)

cdef Py_ssize_t HEADER_SIZE = 10
cdef unsigned long long RESERVED_LENGTH = 1 << 24


cdef inline unsigned int _be32(const unsigned char *p) noexcept:
    return (<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16) | (<unsigned int>p[2] << 8) | p[3]


cdef class FrameDecoder:
    cdef bytearray _buf
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _max_payload
    cdef Py_ssize_t _skip
    cdef object _skipped

    def __init__(self, Py_ssize_t max_payload=4 << 20):
        self._buf = bytearray()
        self._pos = 0
        self._max_payload = max_payload
        self._skip = 0
        self._skipped = None

    @property
    def buffered(self):
        return len(self._buf) - self._pos

    def feed(self, data):
        cdef Py_ssize_t n = len(data)
        cdef Py_ssize_t dropped
        if self._skip:
            dropped = self._skip if self._skip < n else n
            self._skip -= dropped
            if dropped == n:
                return
            data = memoryview(data)[dropped:]
        if self._pos and self._pos >= len(self._buf):
            del self._buf[:]
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self):
        cdef Py_ssize_t avail, end
        cdef unsigned int length, stream_id
        cdef const unsigned char *p
        if self._skip:
            return NEED_DATA
        if self._skipped is not None:
            done = self._skipped
            self._skipped = None
            return done
        avail = len(self._buf) - self._pos
        if avail < HEADER_SIZE:
            return NEED_DATA
        p = <const unsigned char *>PyByteArray_AS_STRING(self._buf) + self._pos
        length = _be32(p)
        stream_id = _be32(p + 4)
        frame_type = p[8]
        flags = p[9]
        if length >= RESERVED_LENGTH:
            raise ProtocolError(f"frame length {length} has the reserved byte set")
        if length > <unsigned int>self._max_payload:
            return self._start_skip(length, stream_id, frame_type, avail - HEADER_SIZE)
        if avail < HEADER_SIZE + <Py_ssize_t>length:
            return NEED_DATA
        end = self._pos + HEADER_SIZE + length
        payload = PyBytes_FromStringAndSize(<const char *>p + HEADER_SIZE, length)
        self._pos = end
        return Frame(stream_id, frame_type, flags, payload)

    cdef object _start_skip(self, Py_ssize_t length, unsigned int stream_id, int frame_type,
                            Py_ssize_t available):
        oversize = OversizeFrame(stream_id, frame_type, length)
        if available >= length:
            self._pos += HEADER_SIZE + length
            return oversize
        del self._buf[:]
        self._pos = 0
        self._skip = length - available
        self._skipped = oversize
        return NEED_DATA
