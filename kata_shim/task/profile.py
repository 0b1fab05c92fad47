"""The client profile: what differs between the shim's clients, in one injected object.

`ClientProfile` is containerd's semantics (the default); `LibShimV2Profile`
(libshimv2.py) is iSulad's lib-shim-v2. `client_profile` picks one: containerd
always starts the shim with `-address`, iSulad never does. TaskService calls
the hooks below at fixed points and never asks which client it serves.
Differences owned by a profile: how an exec is started (lib-shim-v2 reaps exec
records), what a Create leaving the shim without a task means (lib-shim-v2:
idle exit), how Stats are encoded, whether Shutdown's reply waits for the
sandbox teardown, and the exit fifos (`ExitFifos`, active whenever
EXIT_FIFO_DIR is set; iSulad sets it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from google.protobuf.any_pb2 import Any as AnyMessage

from kata_shim.process.process import Process
from kata_shim.proto import agent_pb2
from kata_shim.task import lifecycle
from kata_shim.task.containers import Container, TaskEnv
from kata_shim.task.exitfifo import ExitFifos
from kata_shim.task.stats import stats_any
from kata_shim.task.tuning import Tuning

__all__ = ["ClientProfile", "client_profile"]


class ClientProfile:
    """containerd: every difference is a no-op or the plain task operation."""

    name = "containerd"
    #: False: Shutdown answers at once and the shim exits when its sandbox is torn down.
    #: containerd next closes the connection and runs the `delete` action, which waits (up
    #: to 3.5 s) for this process to exit (shim/delete.py) before containerd removes the
    #: bundle: the teardown overlaps containerd's close and exec instead of preceding them.
    shutdown_waits_for_teardown = False

    def __init__(self, exit_fifo_dir: Path | None = None) -> None:
        self.exit_fifos = ExitFifos(exit_fifo_dir)

    def bind(self, tuning: Tuning, on_idle: Callable[[], None]) -> None:
        """Called once by the service: its tuning, and what to call when it should exit."""

    def create_began(self) -> None:
        """A Create arrived."""

    def create_ended(self, idle: bool) -> None:
        """A Create finished; `idle`: the shim has no task (and no Create in flight) now."""

    async def start_exec(self, env: TaskEnv, container: Container, process: Process) -> int:
        """Start(exec)."""
        return await lifecycle.start_exec(env, container, process)

    def stats(self, stats: agent_pb2.CgroupStats) -> AnyMessage:
        """Stats' payload: v1 or v2 Metrics by the host's cgroup mode."""
        return stats_any(stats)

    def close(self) -> None:
        """The service is closing: stop whatever the profile runs in the background."""


def client_profile(*, lib_shim_v2: bool, exit_fifo_dir: Path | None = None) -> ClientProfile:
    """containerd's profile, or lib-shim-v2's (iSulad)."""
    if lib_shim_v2:
        from kata_shim.task.libshimv2 import LibShimV2Profile

        return LibShimV2Profile(exit_fifo_dir)
    return ClientProfile(exit_fifo_dir)
