"""The shared acceptance check /work/shared/checks/start-contract against our console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kata_shim.devenv.shim import console_script

pytestmark = pytest.mark.timeout(120)

CHECK = Path("/work/shared/checks/start-contract")
ROOT = Path(__file__).resolve().parents[2]


def test_start_contract_passes(shim_bin: Path) -> None:
    assert CHECK.is_file(), f"{CHECK} is missing"
    # The installed console script when pip created it, else the identical launcher.
    shim = console_script() or shim_bin
    env = {**os.environ, "KATA_SHIM": str(shim)}
    result = subprocess.run(
        [sys.executable, str(CHECK), str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "START-CONTRACT 5/5" in result.stdout
