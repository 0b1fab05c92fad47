"""Container processes (init and exec): the state machine, exit records and exit ordering.

`states` holds the transition table, `process` one process's lock, state and
set-once exit future, `exits` the rules that order exits (exec exits before
the init's, no exec start after the init exited) and exit-status normalisation.
"""

from kata_shim.process.exits import ExitOrder, normalise_status
from kata_shim.process.process import ExitRecord, Process
from kata_shim.process.states import TRANSITIONS, Op, ProcessState, transition

__all__ = [
    "TRANSITIONS",
    "ExitOrder",
    "ExitRecord",
    "Op",
    "Process",
    "ProcessState",
    "normalise_status",
    "transition",
]
