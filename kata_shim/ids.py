"""containerd's identifier rule for task, exec and sandbox ids (and namespaces).

An identifier is 1-76 characters, ASCII letters and digits in groups joined by
single `.`, `_` or `-` (`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`): so never
empty, never `.`/`..`, never containing `/` — an id that passes can be used as
one path component under a state directory. containerd validates before it
calls us; this guards every other caller of the socket and the binary.
Standard library only, no `re`: flags.py checks `-id` on every start.
"""

from __future__ import annotations

__all__ = ["MAX_LENGTH", "identifier_problem"]

MAX_LENGTH = 76
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_SEPARATORS = frozenset("._-")


def identifier_problem(value: str) -> str | None:
    """Why `value` is not a valid identifier, or None if it is."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_LENGTH:
        return f"is longer than {MAX_LENGTH} characters"
    previous_separator = True  # no separator at the start
    for char in value:
        if char in _ALNUM:
            previous_separator = False
        elif char in _SEPARATORS and not previous_separator:
            previous_separator = True
        else:
            return f"must match ^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$ ({value!r})"
    if previous_separator:
        return f"must not end with a separator ({value!r})"
    return None
