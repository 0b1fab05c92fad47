"""The containerd Task service for VM sandboxes (`service.TaskService`) and its parts.

service.py: the 17 RPCs; create.py / lifecycle.py: what they do to a container;
exitwatch.py: each process's exit, in order; profile.py / libshimv2.py: what
differs between containerd and iSulad's lib-shim-v2; exitfifo.py: iSulad's exit
fifos; pod(s).py: sandboxes and their agents (kata_shim.agent); spec.py: bundle
spec, annotations and Any payloads; stats.py: Metrics conversion.
"""

from kata_shim.task.service import TaskService
from kata_shim.task.tuning import Tuning

__all__ = ["TaskService", "Tuning"]
