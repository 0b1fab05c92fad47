"""The client profiles: which one a shim gets, and what each does at the service's hooks.
(Their effect through TaskService is in test_isulad_rules.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from kata_shim.proto import agent_pb2
from kata_shim.task.libshimv2 import LibShimV2Profile
from kata_shim.task.profile import ClientProfile, client_profile
from tests.task.harness import FAST

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


def _stats() -> agent_pb2.CgroupStats:
    stats = agent_pb2.CgroupStats()
    stats.blkio_stats.io_service_bytes_recursive.add(major=8, minor=0, op="Sync", value=3)
    return stats


async def test_the_profile_follows_the_client(tmp_path: Path) -> None:
    containerd = client_profile(lib_shim_v2=False)
    isulad = client_profile(lib_shim_v2=True, exit_fifo_dir=tmp_path)
    assert type(containerd) is ClientProfile and containerd.name == "containerd"
    assert isinstance(isulad, LibShimV2Profile) and isulad.name == "lib-shim-v2"
    assert containerd.exit_fifos.directory is None
    assert isulad.exit_fifos.directory == tmp_path


async def test_lib_shim_v2_stats_are_always_v1_with_read_write_pairs() -> None:
    payload = client_profile(lib_shim_v2=True).stats(_stats())
    assert payload.type_url == "io.containerd.cgroups.v1.Metrics"
    plain = client_profile(lib_shim_v2=False).stats(_stats())
    assert plain.type_url.startswith("io.containerd.cgroups.v")
    assert plain.value != payload.value  # the Sync entry is kept for containerd


async def test_only_lib_shim_v2_exits_when_a_create_left_the_shim_idle() -> None:
    tuning = dataclasses.replace(FAST, idle_exit_delay=0.05)
    for lib_shim_v2 in (True, False):
        idled: list[int] = []
        profile = client_profile(lib_shim_v2=lib_shim_v2)
        profile.bind(tuning, lambda: idled.append(1))  # noqa: B023 (used in this iteration)
        profile.create_began()
        profile.create_ended(idle=False)
        await asyncio.sleep(0.15)
        assert idled == []
        profile.create_ended(idle=True)
        await asyncio.sleep(0.15)
        assert idled == ([1] if lib_shim_v2 else [])
        profile.create_ended(idle=True)
        profile.create_began()  # a new Create disarms the timer
        await asyncio.sleep(0.15)
        profile.close()
        assert idled == ([1] if lib_shim_v2 else [])
