"""Native vs pure-Python vsock, compared for real inside a guest VM (vsock loopback, CID 1).

The host's AF_VSOCK is never touched: QEMU gets no vsock device, the guest's
vsock_loopback transport carries the traffic, and the comparison code
(kata_shim.native.selftest) refuses to run outside a test guest.
"""

from __future__ import annotations

import json

import pytest

from kata_shim.devenv.vm import run_selftest
from kata_shim.sandbox.qemu.accel import host_tsc_khz

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_native_and_python_vsock_agree_in_the_guest(guest_image) -> None:
    rc, output = run_selftest(guest_image, "selftest-vsock")
    print("guest vsock selftest:", output)
    assert rc == 0, output
    report = json.loads(output)
    assert report["match"] is True, report["problems"]
    assert report["native_built"] is True
    for name in ("native", "python"):
        assert report[name]["exchange"]["echo_ok"] is True
        assert report[name]["accept_timeout"] == "OSError:ETIMEDOUT"
    assert len(report["cross"]) == 2


def test_tsc_khz_parsing() -> None:
    assert host_tsc_khz("model name: x\ncpu MHz\t\t: 2596.124\n") == 2596124
    assert host_tsc_khz("no frequency here") == 2_000_000
