"""Timeouts and bounds of the task layer, in one frozen place (tests shrink them).

Rule: every wait that depends on something outside the shim (agent, sandbox,
host stdio reader) is bounded by one of these.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Tuning"]


@dataclass(frozen=True, slots=True)
class Tuning:
    #: deadline of ordinary agent RPCs (WaitProcess, ReadStdout/Stderr, WriteStdin have none)
    agent_timeout: float = 60.0
    #: after SIGKILL / sandbox death: normal drain time before output is discarded
    drain_grace: float = 2.0
    #: after discarding: wait this long for the agent's EOF before abandoning the reads
    drain_abandon: float = 5.0
    #: a host stdout/stderr reader making no progress this long → output discarded
    stall_timeout: float = 30.0
    #: an exited init waits this long for its killed execs' exits, then reports them as 255
    exec_exit_bound: float = 10.0
    #: Delete of a never-started init waits this long for its exit after killing it
    delete_exit_bound: float = 10.0
    #: RemoveContainer's timeout in seconds, as sent to the agent
    remove_timeout: int = 10
    #: CloseIO waits at most this long for stdin to be forwarded
    closeio_timeout: float = 5.0
    #: Sandbox.stop(timeout=...) during teardown
    sandbox_stop_timeout: float = 10.0
    #: Shutdown / close wait at most this long for sandbox teardowns
    teardown_timeout: float = 15.0
    #: lib-shim-v2 never Deletes execs: an exited exec's record is dropped this long after its exit
    exec_reap_delay: float = 30.0
    #: lib-shim-v2 sends no Shutdown after a failed Create: with no task left, exit after this
    idle_exit_delay: float = 10.0
