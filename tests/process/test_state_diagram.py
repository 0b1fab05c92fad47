"""docs/state-machine.md carries the diagram rendered from TRANSITIONS; it must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(10)

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "make_state_diagram.py"


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_state_diagram", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_state_machine_doc_is_generated_from_the_table() -> None:
    module = _load()
    assert module.main(["--check"]) == 0, "run: python docs/make_state_diagram.py --write"


def test_every_state_changing_transition_is_an_arrow() -> None:
    text = _load().mermaid()
    assert "created --> running: start" in text
    assert "pausing --> running: unpause" in text
    assert "stopped --> deleted: delete" in text
