"""What the task layer tells an observer (metrics, the management endpoint): a no-op base.

The task service calls these hooks at fixed points: a pod's sandbox was
created (before boot), booted (with its boot time), torn down; an exit was
published (seconds since the exit was observed); an agent RPC finished (the
ttrpc client's observer). The base class does nothing, so the task layer never
depends on a metrics library; kata_shim.metrics subclasses it. Hooks run on the
event loop and must neither block nor raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kata_shim.task.pod import Pod

__all__ = ["TaskObserver"]


class TaskObserver:
    """No-op hooks; override what you need."""

    def sandbox_created(self, pod: Pod) -> None:
        """`pod`'s sandbox object exists; its boot starts now."""

    def sandbox_booted(self, pod: Pod, seconds: float) -> None:
        """`pod` booted (sandbox start, agent dial, CreateSandbox) in `seconds`."""

    def sandbox_gone(self, pod: Pod) -> None:
        """`pod`'s teardown finished (or its boot failed)."""

    def exit_published(self, seconds: float) -> None:
        """A TaskExit was queued `seconds` after the agent reported the exit."""

    def agent_rpc(self, service: str, method: str, code: int, seconds: float) -> None:
        """An agent RPC finished with status `code` (a ttrpc RpcObserver)."""
