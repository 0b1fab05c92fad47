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

__all__ = [
    "OPTION_TYPES",
    "bytes_field",
    "delete_response",
    "options_config_path",
    "parse_fields",
    "varint_field",
]

OPTION_TYPES = ("runtimeoptions.v1.Options", "cri.runtimeoptions.v1.Options")

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 values are sent as 10-byte varints
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3 | _VARINT) + _varint(value) if value else b""


def bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(data)) + data


def delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    """Encoded DeleteResponse{pid, exit_status, exited_at}."""
    seconds, nanos = divmod(exited_at_ns, 1_000_000_000)
    timestamp = varint_field(1, seconds) + varint_field(2, nanos)
    return varint_field(1, pid) + varint_field(2, exit_status) + bytes_field(3, timestamp)


def _read_varint(buf: bytes, index: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if index >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, index


def parse_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Decode one message level: field number → values (ints, or bytes for LEN/fixed)."""
    fields: dict[int, list[int | bytes]] = {}
    index = 0
    while index < len(buf):
        key, index = _read_varint(buf, index)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == _VARINT:
            value, index = _read_varint(buf, index)
        elif wire_type in (_LEN, _I64, _I32):
            if wire_type == _LEN:
                size, index = _read_varint(buf, index)
            else:
                size = 8 if wire_type == _I64 else 4
            if index + size > len(buf):
                raise ValueError("truncated field")
            value, index = buf[index : index + size], index + size
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


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
