"""The two protobuf messages the `start`/`delete` actions touch, hand-encoded.

`delete` writes a `containerd.task.v2.DeleteResponse` (pid=1, exit_status=2,
exited_at=3 Timestamp{seconds=1, nanos=2}); `delete` and `serve` read the
runtime options `google.protobuf.Any` (type_url=1, value=2) that `start`
saved, whose value is a `runtimeoptions.v1.Options` (config_path=2); the
liveness probe in cleanup.py sends one raw ttrpc Connect.
Importing google.protobuf costs ~40 ms, more than the rest of these actions,
hence this module. Tests check it against the generated classes.
"""

from __future__ import annotations

from kata_shim.pbwire import encode_varint, fields, len_field_header

__all__ = [
    "OPTION_TYPES",
    "bytes_field",
    "delete_response",
    "options_config_path",
    "parse_fields",
    "varint_field",
]

OPTION_TYPES = ("runtimeoptions.v1.Options", "cri.runtimeoptions.v1.Options")

_VARINT, _LEN = 0, 2


def _varint(value: int) -> bytes:
    return encode_varint(value & (1 << 64) - 1)  # negative int32/int64: 10-byte varints


def varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3 | _VARINT) + _varint(value) if value else b""


def bytes_field(number: int, data: bytes) -> bytes:
    return len_field_header(number, len(data)) + data


def delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    """Encoded DeleteResponse{pid, exit_status, exited_at}."""
    seconds, nanos = divmod(exited_at_ns, 1_000_000_000)
    timestamp = varint_field(1, seconds) + varint_field(2, nanos)
    return varint_field(1, pid) + varint_field(2, exit_status) + bytes_field(3, timestamp)


def parse_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Decode one message level: field number → values (ints, or bytes for LEN/fixed).
    Raises ValueError (pbwire.WireError) on malformed input."""
    decoded: dict[int, list[int | bytes]] = {}
    for number, _, value in fields(buf):
        decoded.setdefault(number, []).append(value if isinstance(value, int) else bytes(value))
    return decoded


def _last_bytes(fields: dict[int, list[int | bytes]], number: int) -> bytes:
    values = [v for v in fields.get(number, []) if isinstance(v, bytes)]
    return values[-1] if values else b""


def options_config_path(any_bytes: bytes) -> str | None:
    """`config_path` of a runtime options Any (either Options type); None otherwise."""
    if not any_bytes:
        return None
    outer = parse_fields(any_bytes)
    type_url = _last_bytes(outer, 1).decode(errors="replace")
    if type_url.rsplit("/", 1)[-1] not in OPTION_TYPES:
        return None
    path = _last_bytes(parse_fields(_last_bytes(outer, 2)), 2).decode(errors="replace")
    return path or None
