"""VM sizing from the pod's annotations (kata_shim/sandbox/sizing.py): parsing, Kata's
enable_annotations rule, precedence, static_sandbox_resource_mgmt, limits, QemuConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from kata_shim.config.schema import build_config
from kata_shim.errors import InvalidArgument
from kata_shim.sandbox.preflight import Origin, qemu_config
from kata_shim.sandbox.qemu.backend import QemuSandbox
from kata_shim.sandbox.sizing import (
    CRI_CPU_PERIOD,
    CRI_CPU_QUOTA,
    CRI_MEMORY,
    KATA_MEMORY,
    KATA_VCPUS,
    POD_CPU,
    POD_MEMORY,
    HostLimits,
    SizingPolicy,
    SizingRequest,
    VmSize,
    compute_size,
    size_vm,
)
from kata_shim.shim.runtime import ShimRuntime

HOST = HostLimits(cpus=8, memory_mib=16384)
ENABLED = SizingPolicy(VmSize(1, 512), enable_annotations=("default_vcpus", "default_memory"))
GIB = 1 << 30


def size(annotations: dict[str, str], policy: SizingPolicy = ENABLED) -> VmSize:
    return compute_size(annotations, policy, HOST)


def refused(annotations: dict[str, str], policy: SizingPolicy = ENABLED) -> str:
    with pytest.raises(InvalidArgument) as caught:
        size(annotations, policy)
    return caught.value.message


def test_no_annotation_keeps_the_configured_size() -> None:
    assert size({}) == VmSize(1, 512)
    assert SizingRequest.from_annotations({"io.kubernetes.cri.sandbox-id": "x"}) is None


def test_request_keeps_only_sizing_annotations() -> None:
    request = SizingRequest.from_annotations(
        {KATA_VCPUS: "2", "io.kubernetes.cri.container-type": "sandbox", POD_MEMORY: "1G"}
    )
    assert request is not None and dict(request.annotations) == {KATA_VCPUS: "2", POD_MEMORY: "1G"}


def test_kata_annotations_set_vcpus_and_memory() -> None:
    assert size({KATA_VCPUS: "4", KATA_MEMORY: "2048"}) == VmSize(4, 2048)
    assert size({KATA_VCPUS: "1.5"}) == VmSize(2, 512)  # a number, rounded up as Kata does


@pytest.mark.parametrize(
    ("enabled", "allowed"),
    [
        ((), False),
        (("default_memory",), False),
        (("default_vcpus",), True),
        (("default_.*",), True),
        ((".*",), True),
        (("vcpus",), True),  # searched, not anchored (Go's regexp.MatchString)
        (("^vcpus$",), False),
    ],
)
def test_enable_annotations_is_a_list_of_regexps_over_the_suffix(
    enabled: tuple[str, ...], allowed: bool
) -> None:
    policy = SizingPolicy(VmSize(1, 512), enable_annotations=enabled, where="[hypervisor.qemu]")
    if allowed:
        assert size({KATA_VCPUS: "2"}, policy).vcpus == 2
    else:
        message = refused({KATA_VCPUS: "2"}, policy)
        assert f"annotation {KATA_VCPUS} is not enabled" in message
        assert "add 'default_vcpus' to enable_annotations in [hypervisor.qemu]" in message


def test_any_hypervisor_annotation_must_be_enabled_like_kata() -> None:
    key = "io.katacontainers.config.hypervisor.kernel_params"
    assert f"annotation {key} is not enabled" in refused({key: "quiet"})
    policy = SizingPolicy(VmSize(1, 512), enable_annotations=("kernel_params",))
    assert size({key: "quiet"}, policy) == VmSize(1, 512)  # enabled, not implemented: ignored


def test_bad_regexp_in_enable_annotations_names_the_table() -> None:
    policy = SizingPolicy(VmSize(1, 512), enable_annotations=("(",), where="[hypervisor.qemu]")
    assert "[hypervisor.qemu] enable_annotations: '('" in refused({KATA_VCPUS: "2"}, policy)


def test_pod_annotations_need_no_enabling_and_take_units() -> None:
    policy = SizingPolicy(VmSize(1, 512))
    assert size({POD_CPU: "2", POD_MEMORY: "1G"}, policy) == VmSize(2, 1024)
    assert size({POD_MEMORY: str(2 * GIB)}, policy).memory_mib == 2048  # bytes
    for value, mib in (("512M", 512), ("512m", 512), ("1GiB", 1024), ("1.5g", 1536), ("4gb", 4096)):
        assert size({POD_MEMORY: value}, policy).memory_mib == mib, value


def test_kata_annotations_win_over_pod_annotations() -> None:
    both = {KATA_VCPUS: "3", POD_CPU: "2", KATA_MEMORY: "300", POD_MEMORY: "1G"}
    assert size(both) == VmSize(3, 300)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        (KATA_VCPUS, "two", "not a number"),
        (KATA_VCPUS, "0", "fewer than 1 vCPU"),
        (KATA_VCPUS, "-1", "not a non-negative number"),
        (KATA_VCPUS, "nan", "not a non-negative number"),
        (KATA_MEMORY, "1G", "not a whole number of MiB"),
        (KATA_MEMORY, "64", "64 MiB is below the minimum of 128 MiB"),
        (POD_CPU, "", "not a number"),
        (POD_MEMORY, "lots", "not a size"),
        (POD_MEMORY, "100M", "100 MiB is below the minimum of 128 MiB"),
    ],
)
def test_bad_values_name_the_annotation_and_the_fix(key: str, value: str, problem: str) -> None:
    message = refused({key: value})
    assert message.startswith(f"annotation {key}={value!r}: {problem}; fix: "), message


def test_limits_host_cpus_and_configured_maxima() -> None:
    message = refused({KATA_VCPUS: "9"})
    assert "asks for 9 vCPUs (annotation " + KATA_VCPUS + ")" in message
    assert "more than the 8 allowed by the host's CPUs" in message
    capped = SizingPolicy(
        VmSize(1, 512), ("default_.*",), max_vcpus=2, max_memory_mib=1024, where="[hypervisor.qemu]"
    )
    assert "allowed by default_maxvcpus in [hypervisor.qemu]" in refused({KATA_VCPUS: "3"}, capped)
    assert size({KATA_VCPUS: "2", KATA_MEMORY: "1024"}, capped) == VmSize(2, 1024)
    message = refused({KATA_MEMORY: "1025"}, capped)
    assert "1025 MiB" in message and "default_maxmemory in [hypervisor.qemu]" in message
    assert "the host's memory" in refused({POD_MEMORY: "17G"})


def cri(quota: int, period: int, memory: int) -> dict[str, str]:
    return {
        CRI_CPU_QUOTA: str(quota),
        CRI_CPU_PERIOD: str(period),
        "io.kubernetes.cri.sandbox-cpu-shares": "1024",
        CRI_MEMORY: str(memory),
    }


def test_static_resource_management_adds_the_containers_limits() -> None:
    static = SizingPolicy(VmSize(1, 512), static=True)
    assert size(cri(150000, 100000, GIB), static) == VmSize(3, 1536)  # 1.5 CPUs → 2 extra
    assert size(cri(0, 100000, 0), static) == VmSize(1, 512)  # no limits: nothing added
    assert size(cri(-1, 100000, -1), static) == VmSize(1, 512)
    assert size(cri(150000, 100000, GIB), SizingPolicy(VmSize(1, 512))) == VmSize(1, 512)
    over = refused(cri(800000, 100000, 0), static)
    assert f"9 from {CRI_CPU_QUOTA}" not in over and f"8 from {CRI_CPU_QUOTA}" in over
    assert "asks for 9 vCPUs" in over
    assert "not an integer" in refused({CRI_MEMORY: "1Gi"}, static)


def test_size_vm_resizes_the_qemu_config() -> None:
    table = {"default_vcpus": 1, "default_memory": 512, "enable_annotations": ["default_vcpus"]}
    origin = Origin("/etc/kata/configuration.toml", "hypervisor.qemu")
    config = qemu_config(table, origin)
    request = SizingRequest({KATA_VCPUS: "2", POD_MEMORY: "768M"})
    resized = size_vm(config, request, table, origin, host=HOST)
    assert (resized.default_vcpus, resized.default_memory) == (2, 768)
    with pytest.raises(InvalidArgument) as caught:
        size_vm(config, SizingRequest({KATA_MEMORY: "1024"}), table, origin, host=HOST)
    assert "enable_annotations in [hypervisor.qemu] of /etc/kata/configuration.toml" in (
        caught.value.message
    )


def test_static_flag_reaches_the_backend_which_applies_the_request(tmp_path: Path) -> None:
    config = build_config(
        "test.toml",
        {
            "hypervisor": {"qemu": {"default_memory": 256, "enable_annotations": ["default_.*"]}},
            "runtime": {"static_sandbox_resource_mgmt": True, "state_dir": str(tmp_path)},
        },
    )
    assert config.runtime.static_sandbox_resource_mgmt
    sandbox = ShimRuntime(str(tmp_path)).sandbox(config, "sized")
    assert sandbox.spec.static_sandbox_resource_mgmt
    request = SizingRequest({KATA_VCPUS: "1", CRI_MEMORY: str(GIB), CRI_CPU_QUOTA: "1"})
    sandbox.use_sizing(request)  # + 1024 MiB of containers' limits; quota without period: none
    assert isinstance(sandbox, QemuSandbox)
    assert (sandbox.config.default_vcpus, sandbox.config.default_memory) == (1, 1280)


def test_the_configured_size_alone_is_not_checked_against_the_host() -> None:
    big = SizingPolicy(VmSize(16, 512), static=True)  # more vCPUs than HOST: the config's call
    assert size(cri(0, 100000, 0), big) == VmSize(16, 512)
    assert "asks for 17 vCPUs" in refused(cri(100000, 100000, 0), big)
