"""The one translation point between exceptions and wire status codes."""

from __future__ import annotations

import errno

import pytest

from kata_shim import errors
from kata_shim.errors import Code, error_from_status, status_for_exception


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.NotFound, 5),
        (errors.AlreadyExists, 6),
        (errors.InvalidArgument, 3),
        (errors.FailedPrecondition, 9),
        (errors.Unimplemented, 12),
        (errors.DeadlineExceeded, 4),
        (errors.Unavailable, 14),
        (errors.ResourceExhausted, 8),
    ],
)
def test_subclasses_round_trip(cls, code: int) -> None:
    assert status_for_exception(cls("msg")) == (code, "msg")
    rebuilt = error_from_status(code, "msg")
    assert type(rebuilt) is cls and rebuilt.message == "msg"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (FileNotFoundError(errno.ENOENT, "x"), Code.NOT_FOUND),
        (FileExistsError(errno.EEXIST, "x"), Code.ALREADY_EXISTS),
        (PermissionError(errno.EPERM, "x"), Code.PERMISSION_DENIED),
        (OSError(errno.EINVAL, "x"), Code.INVALID_ARGUMENT),
        (TimeoutError(), Code.DEADLINE_EXCEEDED),
        (RuntimeError("boom"), Code.UNKNOWN),
    ],
)
def test_other_exceptions(exc: BaseException, code: Code) -> None:
    assert status_for_exception(exc)[0] == code


def test_unknown_and_unmapped_codes() -> None:
    assert error_from_status(999, "x").code == Code.UNKNOWN
    internal = error_from_status(13, "bad")
    assert type(internal) is errors.ShimError and internal.code == Code.INTERNAL
