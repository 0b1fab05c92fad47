"""The `containerd-shim-kata-v2` binary: flags, the start/delete actions and serve mode.

main.py dispatches; start.py, delete.py (with procs.py) and the helpers they
use (flags, paths, bundle, minipb) import only the standard library, because
containerd runs them on every container start and teardown; serve.py and
daemon.py hold the long-running daemon (uvloop, the task service). See
docs/shim.md for the contract.
"""

__all__: list[str] = []
