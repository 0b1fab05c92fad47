"""The native modules must be built in the test environment (CI catches a missing build)."""

from __future__ import annotations

import importlib

import pytest

from kata_shim.io import copy
from kata_shim.native import epoll, vsock
from kata_shim.ttrpc import wire


@pytest.mark.parametrize(
    "name", ["kata_shim._fastio", "kata_shim._native", "kata_shim.ttrpc._framing"]
)
def test_extension_is_importable(name: str) -> None:
    importlib.import_module(name)


def test_compiled_implementations_are_selected() -> None:
    assert copy.IMPLEMENTATION == "cython"
    assert wire.IMPLEMENTATION == "cython"
    assert epoll.IMPLEMENTATION == "cffi"
    assert vsock.IMPLEMENTATION == "cffi"
