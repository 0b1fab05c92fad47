"""The task layer's records: one Container (init + execs) and the collaborators they share.

A Container lives in exactly one Pod and is addressed by containerd's task id;
its init process has exec id "", execs are keyed by containerd's exec id.
Rules: the tables here are only mutated by the event loop in await-free
sections (no lock needed); lookups of unknown ids raise NotFound with
containerd-style messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from kata_shim.errors import NotFound
from kata_shim.events.publisher import Publisher
from kata_shim.process.exits import ExitOrder
from kata_shim.process.process import Process
from kata_shim.process.states import ProcessState
from kata_shim.proto import mount_pb2
from kata_shim.task.exitfifo import ExitFifos
from kata_shim.task.observer import TaskObserver
from kata_shim.task.pod import Pod
from kata_shim.task.tuning import Tuning

__all__ = ["Container", "TaskEnv", "Topic"]

log = logging.getLogger(__name__)


class Topic:
    """containerd task event topics."""

    CREATE = "/tasks/create"
    START = "/tasks/start"
    EXIT = "/tasks/exit"
    DELETE = "/tasks/delete"
    EXEC_ADDED = "/tasks/exec-added"
    EXEC_STARTED = "/tasks/exec-started"
    PAUSED = "/tasks/paused"
    RESUMED = "/tasks/resumed"
    OOM = "/tasks/oom"


@dataclass(frozen=True, slots=True)
class TaskEnv:
    """What every task-layer operation needs besides the container itself."""

    namespace: str
    publisher: Publisher
    tuning: Tuning
    exit_fifos: ExitFifos = field(default_factory=ExitFifos)
    observer: TaskObserver = field(default_factory=TaskObserver)

    def publish(self, topic: str, event: Message) -> None:
        self.publisher.publish(topic, event)


@dataclass(eq=False)
class Container:
    """One containerd task: the init process, its execs and the host resources it holds."""

    id: str
    bundle: str
    pod: Pod
    init: Process
    #: Create's rootfs mounts, echoed in TaskCreate
    rootfs: Sequence[mount_pb2.Mount] = ()
    #: where the rootfs lives on the host, and how many layers we mounted there
    host_rootfs: Path | None = None
    mounted_layers: int = 0
    #: execs by containerd exec id (event loop; Exec adds, Delete(exec) removes)
    execs: dict[str, Process] = field(default_factory=dict)
    #: exec-before-init exit ordering for this container
    order: ExitOrder = field(default_factory=ExitOrder)
    #: for a pod's sandbox container: the pod's other containers (their exits go first)
    siblings: Callable[[], list[Container]] | None = None

    @property
    def pid(self) -> int:
        return self.pod.pid

    def process(self, exec_id: str) -> Process:
        """The init ("") or the named exec; NotFound otherwise."""
        if not exec_id:
            return self.init
        found = self.execs.get(exec_id)
        if found is None:
            raise NotFound(f"process {exec_id} of task {self.id}: not found")
        return found

    def processes(self) -> list[Process]:
        return [self.init, *self.execs.values()]

    def reported_state(self, process: Process) -> ProcessState:
        """An exec of a (being) paused container reports the container's state, as runc does."""
        paused = self.init.state in (ProcessState.PAUSED, ProcessState.PAUSING)
        if paused and not process.is_init and process.state is ProcessState.RUNNING:
            return self.init.state
        return process.state
