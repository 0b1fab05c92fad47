"""The containerd Task service for VM sandboxes (`service.TaskService`) and its parts.

service.py: the 17 RPCs; create.py / lifecycle.py: what they do to a container;
monitor.py: exit monitoring; pod(s).py: sandboxes and their agents; spec.py:
bundle spec, annotations and Any payloads; stats.py: Metrics conversion.
"""

from kata_shim.task.service import TaskService
from kata_shim.task.tuning import Tuning

__all__ = ["TaskService", "Tuning"]
