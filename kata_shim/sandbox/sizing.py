"""VM sizing: the pod's vCPUs and memory, from the sandbox container's annotations.

Sources, by precedence for the base size (first found wins):
1. Kata's `io.katacontainers.config.hypervisor.default_vcpus` (a number, rounded up)
   and `...default_memory` (MiB). As in Kata, any annotation under
   `io.katacontainers.config.hypervisor.` is refused unless its suffix matches one of
   the regular expressions in `[hypervisor.<type>] enable_annotations` (searched, not
   anchored: Kata uses Go's regexp.MatchString). Enabled ones we do not implement are
   logged and ignored.
2. The openEuler pod annotations containerd is configured to pass (`pod_annotations`):
   `com.github.containers.virtcontainers.sandbox_cpu` (a vCPU count) and `...sandbox_mem`
   (bytes, or with a binary unit: 512M, 4G, 4GiB).
3. `default_vcpus` / `default_memory` of the configuration.

With `[runtime] static_sandbox_resource_mgmt = true`, the sum of the containers' limits
that containerd's CRI (1.6 and later) puts on the sandbox container is added to the base,
as Kata does: `io.kubernetes.cri.sandbox-cpu-quota` / `-cpu-period` (vCPUs = quota / period,
rounded up; no quota = none) and `io.kubernetes.cri.sandbox-memory` (bytes; 0 = none).

Limits: vCPUs >= 1 and <= min(host CPUs, default_maxvcpus when set); memory >= 128 MiB and
<= default_maxmemory when set, else the host's memory. A bad value fails with an error
naming the annotation and the fix. Rule: parse and check here only; a backend applies the
result to its QemuConfig (`size_vm`) before it boots.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kata_shim.errors import InvalidArgument

if TYPE_CHECKING:
    from kata_shim.sandbox.preflight import Origin
    from kata_shim.sandbox.qemu.cmdline import QemuConfig

__all__ = [
    "CRI_CPU_PERIOD",
    "CRI_CPU_QUOTA",
    "CRI_MEMORY",
    "KATA_HYPERVISOR_PREFIX",
    "KATA_MEMORY",
    "KATA_VCPUS",
    "MIN_MEMORY_MIB",
    "POD_CPU",
    "POD_MEMORY",
    "HostLimits",
    "SizingPolicy",
    "SizingRequest",
    "VmSize",
    "check_enabled",
    "compute_size",
    "host_limits",
    "size_vm",
]

log = logging.getLogger(__name__)

KATA_HYPERVISOR_PREFIX = "io.katacontainers.config.hypervisor."
KATA_VCPUS = KATA_HYPERVISOR_PREFIX + "default_vcpus"
KATA_MEMORY = KATA_HYPERVISOR_PREFIX + "default_memory"
POD_CPU = "com.github.containers.virtcontainers.sandbox_cpu"
POD_MEMORY = "com.github.containers.virtcontainers.sandbox_mem"
CRI_CPU_PERIOD = "io.kubernetes.cri.sandbox-cpu-period"
CRI_CPU_QUOTA = "io.kubernetes.cri.sandbox-cpu-quota"
CRI_MEMORY = "io.kubernetes.cri.sandbox-memory"
MIN_MEMORY_MIB = 128
_MIB = 1 << 20
_OTHER_KEYS = (POD_CPU, POD_MEMORY, CRI_CPU_PERIOD, CRI_CPU_QUOTA, CRI_MEMORY)
_SUPPORTED_KATA = ("default_vcpus", "default_memory")
# a size: digits (a decimal point allowed), optional binary unit, optional i and b (docker's)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?(i?b)?$", re.IGNORECASE)
_UNIT_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


@dataclass(frozen=True, slots=True)
class SizingRequest:
    """The sizing annotations of a sandbox container (only those; values unparsed)."""

    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, Any]) -> SizingRequest | None:
        """The relevant subset of a spec's annotations, or None when there is none."""
        found = {
            str(key): str(value)
            for key, value in annotations.items()
            if str(key).startswith(KATA_HYPERVISOR_PREFIX) or key in _OTHER_KEYS
        }
        return cls(found) if found else None


@dataclass(frozen=True, slots=True)
class HostLimits:
    cpus: int
    memory_mib: int


@dataclass(frozen=True, slots=True)
class VmSize:
    vcpus: int
    memory_mib: int


def host_limits() -> HostLimits:
    """The CPUs this process may run on and the host's MemTotal."""
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) // 1024
            break
    return HostLimits(len(os.sched_getaffinity(0)), memory)


def _bad(key: str, value: str, problem: str, fix: str) -> InvalidArgument:
    return InvalidArgument(f"annotation {key}={value!r}: {problem}; fix: {fix}")


def _number(key: str, value: str, fix: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _bad(key, value, "not a number", fix) from None
    if not math.isfinite(number) or number < 0:
        raise _bad(key, value, "not a non-negative number", fix)
    return number


def _vcpus(key: str, value: str) -> int:
    count = math.ceil(_number(key, value, "give a whole number of vCPUs >= 1"))
    if count < 1:
        raise _bad(key, value, "fewer than 1 vCPU", "give a whole number of vCPUs >= 1")
    return count


def _memory_mib(key: str, value: str) -> int:
    if not (value.strip().isascii() and value.strip().isdigit()):
        raise _bad(key, value, "not a whole number of MiB", f"give MiB (>= {MIN_MEMORY_MIB})")
    return int(value)


def _size_mib(key: str, value: str) -> int:
    """Bytes with an optional binary unit (512M, 4G, 4GiB, 2147483648) → whole MiB."""
    match = _SIZE.match(value.strip())
    if match is None:
        fix = "give bytes or a size with a unit: 536870912, 512M, 4G"
        raise _bad(key, value, "not a size", fix)
    number = float(match.group(1)) * (1 << _UNIT_SHIFT[(match.group(2) or "").lower()])
    return int(number) // _MIB


def _cri_int(annotations: Mapping[str, str], key: str) -> int:
    value = annotations.get(key, "0").strip() or "0"
    try:
        return int(value)
    except ValueError:
        problem = "not an integer (containerd writes one)"
        raise _bad(key, value, problem, "fix the pod's resources") from None


@dataclass(frozen=True, slots=True)
class SizingPolicy:
    """What the configuration says about sizing: defaults, limits, enabled annotations."""

    default: VmSize
    enable_annotations: tuple[str, ...] = ()
    static: bool = False  # [runtime] static_sandbox_resource_mgmt
    max_vcpus: int = 0  # default_maxvcpus (0: the host's CPUs)
    max_memory_mib: int = 0  # default_maxmemory (0: the host's memory)
    where: str = "[hypervisor.qemu]"  # the table (and file) these came from, for errors


def _enabled(pattern: str, suffix: str, where: str) -> bool:
    try:
        return re.search(pattern, suffix) is not None
    except re.error as exc:
        raise InvalidArgument(
            f"{where} enable_annotations: {pattern!r} is not a regular expression ({exc}); "
            f'fix: list annotation names without the prefix, e.g. "default_vcpus"'
        ) from None


def check_enabled(annotations: Mapping[str, str], policy: SizingPolicy) -> None:
    """Kata's rule: a hypervisor annotation must match one of `enable_annotations`."""
    for key in sorted(annotations):
        if not key.startswith(KATA_HYPERVISOR_PREFIX):
            continue
        suffix = key[len(KATA_HYPERVISOR_PREFIX) :]
        if not any(_enabled(p, suffix, policy.where) for p in policy.enable_annotations):
            raise InvalidArgument(
                f"annotation {key} is not enabled; fix: add {suffix!r} to enable_annotations "
                f"in {policy.where}, or remove the annotation from the pod"
            )
        if suffix not in _SUPPORTED_KATA:
            log.warning(
                "annotation %s is enabled but kata-shim does not implement it: ignored", key
            )


def _base(annotations: Mapping[str, str], policy: SizingPolicy) -> tuple[VmSize, str, str]:
    """The base size and what set each part (an annotation, or the configuration key)."""
    vcpus, vcpus_from = policy.default.vcpus, f"default_vcpus in {policy.where}"
    for key in (KATA_VCPUS, POD_CPU):
        if key in annotations:
            vcpus, vcpus_from = _vcpus(key, annotations[key]), f"annotation {key}"
            break
    memory, memory_from = policy.default.memory_mib, f"default_memory in {policy.where}"
    for key, parse in ((KATA_MEMORY, _memory_mib), (POD_MEMORY, _size_mib)):
        if key in annotations:
            memory, memory_from = parse(key, annotations[key]), f"annotation {key}"
            if memory < MIN_MEMORY_MIB:
                problem = f"{memory} MiB is below the minimum of {MIN_MEMORY_MIB} MiB"
                raise _bad(key, annotations[key], problem, f"give at least {MIN_MEMORY_MIB} MiB")
            break
    return VmSize(vcpus, memory), vcpus_from, memory_from


def _workload(annotations: Mapping[str, str]) -> VmSize:
    """The containers' limits containerd's CRI passes (static_sandbox_resource_mgmt)."""
    quota, period = _cri_int(annotations, CRI_CPU_QUOTA), _cri_int(annotations, CRI_CPU_PERIOD)
    vcpus = math.ceil(quota / period) if quota > 0 and period > 0 else 0
    return VmSize(vcpus, max(_cri_int(annotations, CRI_MEMORY), 0) // _MIB)


def _over(what: str, total: int, limit: int, limit_from: str, source: str) -> InvalidArgument:
    """`source` names every part of the total; a configured limit can be raised, the host's not."""
    raise_limit = "" if limit_from.startswith("the host's") else f", or raise {limit_from}"
    return InvalidArgument(
        f"the pod asks for {total} {what} ({source}), more than the {limit} allowed by "
        f"{limit_from}; fix: ask for at most {limit} {what} in all{raise_limit}"
    )


def compute_size(annotations: Mapping[str, str], policy: SizingPolicy, host: HostLimits) -> VmSize:
    """The VM's size for these annotations under `policy` (InvalidArgument when out of range)."""
    check_enabled(annotations, policy)
    base, vcpus_from, memory_from = _base(annotations, policy)
    extra = _workload(annotations) if policy.static else VmSize(0, 0)
    if extra.vcpus:
        vcpus_from += f" + {extra.vcpus} from {CRI_CPU_QUOTA}/{CRI_CPU_PERIOD}"
    if extra.memory_mib:
        memory_from += f" + {extra.memory_mib} MiB from {CRI_MEMORY}"
    size = VmSize(base.vcpus + extra.vcpus, base.memory_mib + extra.memory_mib)
    if size != policy.default:  # the configured size alone is the configuration's business
        _check_limits(size, policy, host, vcpus_from, memory_from)
    return size


def _check_limits(
    size: VmSize, policy: SizingPolicy, host: HostLimits, vcpus_from: str, memory_from: str
) -> None:
    vcpu_limit, vcpu_limit_from = host.cpus, "the host's CPUs"
    if 0 < policy.max_vcpus < vcpu_limit:
        vcpu_limit, vcpu_limit_from = policy.max_vcpus, f"default_maxvcpus in {policy.where}"
    if size.vcpus > vcpu_limit:
        raise _over("vCPUs", size.vcpus, vcpu_limit, vcpu_limit_from, vcpus_from)
    memory_limit, memory_limit_from = host.memory_mib, "the host's memory (MiB)"
    if policy.max_memory_mib > 0:
        memory_limit = policy.max_memory_mib
        memory_limit_from = f"default_maxmemory in {policy.where}"
    if size.memory_mib > memory_limit:
        raise _over("MiB", size.memory_mib, memory_limit, memory_limit_from, memory_from)


def size_vm(
    config: QemuConfig,
    request: SizingRequest,
    table: Mapping[str, Any],
    origin: Origin,
    *,
    static: bool = False,
    host: HostLimits | None = None,
) -> QemuConfig:
    """`config` resized for the pod's `request` (the backend's `[hypervisor.*]` `table`)."""
    where = f"[{origin.section}]" + (f" of {origin.source}" if origin.source else "")
    policy = SizingPolicy(
        default=VmSize(config.default_vcpus, config.default_memory),
        enable_annotations=tuple(table.get("enable_annotations", ())),
        static=static,
        max_vcpus=int(table.get("default_maxvcpus", 0) or 0),
        max_memory_mib=int(table.get("default_maxmemory", 0) or 0),
        where=where,
    )
    size = compute_size(request.annotations, policy, host or host_limits())
    if size == policy.default:
        return config
    log.info("VM size: %d vCPUs, %d MiB (from the pod's annotations)", size.vcpus, size.memory_mib)
    return dataclasses.replace(config, default_vcpus=size.vcpus, default_memory=size.memory_mib)
