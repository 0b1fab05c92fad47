"""kata_shim.oci: map fields both ways, the prebuilt key tables, no descriptor_pb2 import."""

from __future__ import annotations

import subprocess
import sys

from kata_shim import oci
from kata_shim.proto import oci_pb2


def test_map_fields_round_trip_and_unknown_keys_are_reported() -> None:
    spec = {
        "ociVersion": "1.0.2",
        "annotations": {"io.kubernetes.cri.container-type": "sandbox", "n": "1"},
        "linux": {"sysctl": {"net.ipv4.ip_forward": "1"}, "bogus": 1},
        "process": {"args": ["sh"], "user": {"uid": 7, "gid": 8}},
    }
    unknown: list[str] = []
    message = oci.spec_from_json(spec, unknown)
    assert dict(message.Annotations) == spec["annotations"]
    assert dict(message.Linux.Sysctl) == {"net.ipv4.ip_forward": "1"}
    assert unknown == ["linux.bogus"]
    back = oci.spec_to_json(message)
    assert back["annotations"] == spec["annotations"]
    assert back["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert back["process"]["user"] == {"uid": 7, "gid": 8}


def test_every_message_of_oci_proto_has_its_key_table() -> None:
    def names(descriptors):  # type: ignore[no-untyped-def]
        for descriptor in descriptors:
            yield descriptor.full_name
            yield from names(descriptor.nested_types)

    expected = set(names(oci_pb2.DESCRIPTOR.message_types_by_name.values()))
    assert expected and expected <= set(oci._FIELDS)
    assert oci._FIELDS["grpc.Spec"]["ociVersion"].name == "Version"


def test_conversion_never_imports_descriptor_pb2() -> None:
    script = (
        "import sys; from kata_shim import oci;"
        "m = oci.spec_from_json({'annotations': {'a': 'b'}, 'linux': {'sysctl': {'k': 'v'}}});"
        "assert oci.spec_to_json(m)['annotations'] == {'a': 'b'};"
        "print('google.protobuf.descriptor_pb2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
