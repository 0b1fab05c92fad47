"""The native modules are built in this environment (so CI fails when the build step is missing).

Checks the extensions import, are selected over the pure-Python twins, and are current:
kata_shim._native must export every function csrc/native.h declares (a stale .so from an
older native.c would not), and kata_shim._fastio read_some.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import kata_shim._fastio
import kata_shim._native
from kata_shim.io import copy
from kata_shim.native import vsock
from kata_shim.ttrpc import wire

HEADER = Path(__file__).resolve().parents[2] / "csrc" / "native.h"


@pytest.mark.parametrize(
    "name", ["kata_shim._fastio", "kata_shim._native", "kata_shim.ttrpc._framing"]
)
def test_extension_is_importable(name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__ or "").suffix == ".so"


def test_compiled_implementations_are_selected() -> None:
    assert copy.IMPLEMENTATION == "cython"
    assert copy.read_some is kata_shim._fastio.read_some
    assert wire.IMPLEMENTATION == "cython"
    assert vsock.IMPLEMENTATION == "cffi"


def test_native_module_matches_its_header() -> None:
    declared = set(re.findall(r"\b(ks_\w+)\(", HEADER.read_text()))
    assert len(declared) == 5  # poll_one + four AF_VSOCK steps
    missing = {name for name in declared if not hasattr(kata_shim._native.lib, name)}
    assert not missing, f"kata_shim._native is stale (rebuild it): missing {sorted(missing)}"


def test_fastio_exports_read_some() -> None:
    assert callable(kata_shim._fastio.read_some)
    assert kata_shim._fastio.IMPLEMENTATION == "cython"
