"""OCI runtime spec JSON ⇄ the agent protocol's `grpc.Spec` / `grpc.Process` protobufs.

The shim converts the bundle's config.json (and Exec's JSON process) to protobuf
for the agent; the agent converts back to write runc's config.json. The mapping
walks protobuf descriptors: a proto field's JSON key is its name with the first
letter lower-cased, except for the few names in `_JSON_NAMES`. Proto3 zero
values are omitted from JSON (OCI treats absent and zero alike for these
fields). Unknown JSON keys are ignored and reported to the caller. The JSON key
tables of oci.proto's messages are built at import (a forked daemon shares the
fork server's); a map field is recognised by its container (a Mapping), not by
its entry's options, which would import descriptor_pb2 on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from kata_shim.proto import oci_pb2

__all__ = [
    "process_from_json",
    "process_to_json",
    "resources_from_json",
    "resources_to_json",
    "spec_from_json",
    "spec_to_json",
]

# proto field name → OCI JSON key where lower-casing the first letter is not enough
_JSON_NAMES = {
    "Version": "ociVersion",
    "errnoret": "errnoRet",
    "UIDMappings": "uidMappings",
    "GIDMappings": "gidMappings",
    "OOMScoreAdj": "oomScoreAdj",
    "CPU": "cpu",
    "UID": "uid",
    "GID": "gid",
}
# Platform sections OCI JSON never carries for Linux containers.
_SKIPPED = {"Solaris", "Windows"}


def json_name(field: FieldDescriptor) -> str:
    return _JSON_NAMES.get(field.name) or field.name[:1].lower() + field.name[1:]


def _json_fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {json_name(f): f for f in descriptor.fields if f.name not in _SKIPPED}


def _repeated(field: FieldDescriptor) -> bool:
    """`is_repeated` from protobuf 5.29 on; `label` before (Debian 12 ships 4.21)."""
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        return bool(field.label == FieldDescriptor.LABEL_REPEATED)
    return bool(repeated)


def _with_nested(descriptors: Iterable[Descriptor]) -> Iterator[Descriptor]:
    for descriptor in descriptors:
        yield descriptor
        yield from _with_nested(descriptor.nested_types)


#: message full name → {JSON key: field}, for every message of oci.proto
_FIELDS = {
    d.full_name: _json_fields(d)
    for d in _with_nested(oci_pb2.DESCRIPTOR.message_types_by_name.values())
}


def _fields_by_json(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    fields = _FIELDS.get(descriptor.full_name)
    if fields is None:  # a message from another file (none today)
        fields = _FIELDS[descriptor.full_name] = _json_fields(descriptor)
    return fields


def to_json(message: Message) -> dict[str, Any]:
    """The OCI JSON object for a protobuf message (set fields only)."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.name in _SKIPPED:
            continue
        repeated = _repeated(field)
        if isinstance(value, Mapping):  # a map field
            out[json_name(field)] = dict(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            out[json_name(field)] = [to_json(v) for v in value] if repeated else to_json(value)
        else:
            out[json_name(field)] = list(value) if repeated else value
    return out


def from_json(
    data: Mapping[str, Any], message: Message, path: str = "", unknown: list[str] | None = None
) -> None:
    """Fill `message` from an OCI JSON object; append unknown keys' paths to `unknown`."""
    fields = _fields_by_json(message.DESCRIPTOR)
    for key, value in data.items():
        field = fields.get(key)
        if field is None or value is None:
            if field is None and unknown is not None:
                unknown.append(f"{path}{key}")
            continue
        _assign(message, field, value, f"{path}{key}.", unknown)


def _assign(
    message: Message, field: FieldDescriptor, value: Any, path: str, unknown: list[str] | None
) -> None:
    target = getattr(message, field.name)
    if isinstance(target, MutableMapping):  # a map field
        target.update({str(k): str(v) for k, v in value.items()})
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        if _repeated(field):
            for item in value:
                from_json(item, target.add(), path, unknown)
        else:
            target.SetInParent()  # present even when every value in it is zero
            from_json(value, target, path, unknown)
    elif _repeated(field):
        target.extend(value)
    else:
        setattr(message, field.name, value)


def spec_from_json(spec: Mapping[str, Any], unknown: list[str] | None = None) -> oci_pb2.Spec:
    message = oci_pb2.Spec()
    from_json(spec, message, unknown=unknown)
    return message


def spec_to_json(spec: oci_pb2.Spec) -> dict[str, Any]:
    return to_json(spec)


def process_from_json(
    process: Mapping[str, Any], unknown: list[str] | None = None
) -> oci_pb2.Process:
    message = oci_pb2.Process()
    from_json(process, message, unknown=unknown)
    return message


def process_to_json(process: oci_pb2.Process) -> dict[str, Any]:
    return to_json(process)


def resources_from_json(resources: Mapping[str, Any]) -> oci_pb2.LinuxResources:
    message = oci_pb2.LinuxResources()
    from_json(resources, message)
    return message


def resources_to_json(resources: oci_pb2.LinuxResources) -> dict[str, Any]:
    return to_json(resources)
