"""The short-lived actions stay light: `start` and `delete` run on every container start and
teardown (containerd waits for both), so neither may pull in asyncio, uvloop or protobuf."""

from __future__ import annotations

import subprocess
import sys

import pytest

# what each action imports, including its lazy imports (delete: config, mounts, start)
MODULES = {
    "start": ["kata_shim.shim.main", "kata_shim.shim.start"],
    "delete": [
        "kata_shim.shim.main",
        "kata_shim.shim.delete",
        "kata_shim.shim.start",
        "kata_shim.config",
        "kata_shim.mounts",
    ],
}
CHECK = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
heavy = [m for m in sys.modules if m.split('.')[0] in ('asyncio', 'uvloop')]
print(' '.join(heavy + [m for m in sys.modules if m.startswith('google.protobuf')]))
"""


@pytest.mark.parametrize("action", sorted(MODULES))
def test_action_imports_nothing_heavy(action: str) -> None:
    argv = [sys.executable, "-c", CHECK, *MODULES[action]]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
