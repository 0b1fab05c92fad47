"""Sandbox start failures through the iSulad flow (lib-shim-v2 emulation), as under containerd.

Three of the faults of tests/integration/test_start_errors.py: one found before
launch (FailedPrecondition), one in the configuration (InvalidArgument), one
from QEMU itself (Unavailable). iSulad receives the status code and the
message of docs/troubleshooting.md; the bundle's `log` holds the error line
with the sandbox id; after iSulad's Kill the shim exits on its own and
nothing is left (processes, sockets, mounts, sandbox state).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.errors import Code
from tests.integration.test_start_errors import FAULTS, code_name, write_configuration
from tests.isulad.rig import IsuladRig
from tests.isulad.ttrpc_sync import RpcError
from tests.troubleshooting import entries

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def rig() -> Iterator[IsuladRig]:
    with IsuladRig(hypervisor="qemu") as rig:
        yield rig


@pytest.mark.parametrize(
    "fault_id", ["kernel-missing", "shared-fs-unavailable", "qemu-rejects-option"]
)
def test_start_failure_under_isulad(rig: IsuladRig, guest_image: Path, fault_id: str) -> None:
    fault, entry = FAULTS[fault_id], entries()[fault_id]
    write_configuration(rig.config, rig.state_dir, fault, fault.keys(rig.work, guest_image))
    cid = rig.id(fault_id.replace("-", ""))
    with pytest.raises(RpcError) as raised:
        rig.isulad.create(cid, rig.spec("true"))
    error = raised.value
    print(f"[{fault_id}] iSulad got code {error.code}: {error.message}")
    assert Code(error.code).name == code_name(entry.code)
    assert entry.matches_message(error.message), f"{error.message}\n\ndoc:\n{entry.message}"
    log = (rig.isulad.containers[cid].bundle / "log").read_text(errors="replace")
    first_line = error.message.splitlines()[0]
    assert f"sandbox {cid}: cannot start ({code_name(entry.code)}): {first_line}" in log, log
    rig.isulad.rm(cid)
    rig.assert_clean()
