"""Error types shared by the shim, the agent and the ttrpc layer.

Rule: code raises a `ShimError` subclass (or lets an OSError escape); the
translation to and from a wire status (`google.rpc.Status` code + message)
happens only in `status_for_exception` and `error_from_status` below, which the
ttrpc server and client call. Nothing else builds status codes by hand.
"""

from __future__ import annotations

import errno
import logging
from enum import IntEnum

__all__ = [
    "AlreadyExists",
    "Code",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "ShimError",
    "Unavailable",
    "Unimplemented",
    "error_from_status",
    "status_for_exception",
]

log = logging.getLogger(__name__)
_SUBCLASS_FOR_CODE: dict[Code, type[ShimError]] = {}  # filled as the subclasses are defined


class Code(IntEnum):
    """The 17 gRPC status codes (google.rpc.Code)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ShimError(Exception):
    """An error that travels over the wire as a status code plus a message.

    A subclass names its code (`class NotFound(ShimError, code=Code.NOT_FOUND)`) and is
    the one `error_from_status` rebuilds for it.
    """

    code: Code = Code.UNKNOWN

    def __init_subclass__(cls, code: Code | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
            _SUBCLASS_FOR_CODE.setdefault(code, cls)

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}: {self.message!r})"


class NotFound(ShimError, code=Code.NOT_FOUND):
    """No such container, process, sandbox or file."""


class AlreadyExists(ShimError, code=Code.ALREADY_EXISTS):
    """The id is taken."""


class InvalidArgument(ShimError, code=Code.INVALID_ARGUMENT):
    """The request is malformed; the message names what to fix."""


class FailedPrecondition(ShimError, code=Code.FAILED_PRECONDITION):
    """Valid, but not in this state (e.g. start of a running process)."""


class Unimplemented(ShimError, code=Code.UNIMPLEMENTED):
    """No such RPC, or a feature not supported here."""


class DeadlineExceeded(ShimError, code=Code.DEADLINE_EXCEEDED):
    """The caller's timeout (or ours) passed first."""


class Unavailable(ShimError, code=Code.UNAVAILABLE):
    """The peer (agent, sandbox, connection) is gone or not answering sensibly."""


class ResourceExhausted(ShimError, code=Code.RESOURCE_EXHAUSTED):
    """A size or count limit (message size, queue length) was hit."""


# errno → status code, as containerd's ttrpc convertCode and errdefs do.
_ERRNO_CODES: dict[int, Code] = {
    errno.ENOENT: Code.NOT_FOUND,
    errno.ESRCH: Code.NOT_FOUND,
    errno.EEXIST: Code.ALREADY_EXISTS,
    errno.EPERM: Code.PERMISSION_DENIED,
    errno.EACCES: Code.PERMISSION_DENIED,
    errno.EINVAL: Code.INVALID_ARGUMENT,
    errno.EPIPE: Code.FAILED_PRECONDITION,
    errno.EBADF: Code.FAILED_PRECONDITION,
    errno.ETIMEDOUT: Code.DEADLINE_EXCEEDED,
    errno.ECONNREFUSED: Code.UNAVAILABLE,
    errno.ECONNRESET: Code.UNAVAILABLE,
}


def status_for_exception(exc: BaseException) -> tuple[Code, str]:
    """Map an exception raised by a handler to a wire (code, message).

    The one place where handler outcomes become status codes.
    """
    if isinstance(exc, ShimError):
        return exc.code, exc.message
    if isinstance(exc, TimeoutError):
        return Code.DEADLINE_EXCEEDED, str(exc) or "deadline exceeded"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_CODES:
        return _ERRNO_CODES[exc.errno], str(exc)
    log.error("unexpected error in handler", exc_info=exc)
    return Code.UNKNOWN, f"{type(exc).__name__}: {exc}"


def error_from_status(code: int, message: str) -> ShimError:
    """Rebuild the matching `ShimError` subclass from a received status."""
    try:
        known = Code(code)
    except ValueError:
        return ShimError(message, Code.UNKNOWN)
    cls = _SUBCLASS_FOR_CODE.get(known)
    if cls is None:
        return ShimError(message, known)
    return cls(message)
