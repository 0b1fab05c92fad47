"""Smoke test for bench/cow_pages.py: one forked pod, every class accounted for.

Not a memory target: it checks that the forked daemon and its agent were found, that
the classes add up to the private total, and that the tool tells a page the child left
as the server had it from one it changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

COW_PAGES = Path(__file__).resolve().parents[2] / "bench" / "cow_pages.py"
sys.path.insert(0, str(COW_PAGES.parent))

import cow_pages  # noqa: E402


def test_classify_tells_restored_refcount_and_other_pages_apart() -> None:
    server = cow_pages.Memory(os.getpid())
    before = bytearray(cow_pages.PAGE)
    before[8:16] = id(str).to_bytes(8, "little")  # an object at offset 0 whose type is str
    before[32:40] = id(dict).to_bytes(8, "little")  # and one at 24 whose type is dict
    before[0:8] = before[24:32] = (3).to_bytes(8, "little")  # their reference counts
    try:
        assert cow_pages.classify(server, bytes(before), bytes(before)) == ("identical", [], 0)
        after = bytearray(before)
        after[0:8] = (4).to_bytes(8, "little")
        kind = cow_pages.classify(server, bytes(before), bytes(after))
        assert kind == ("str_refcount", ["str"], 1)
        after[24:32] = (2).to_bytes(8, "little")
        kind = cow_pages.classify(server, bytes(before), bytes(after))
        assert kind == ("refcount_only", ["str", "dict"], 2)
        after[64:72] = (7).to_bytes(8, "little")
        assert cow_pages.classify(server, bytes(before), bytes(after))[0] == "other"
        assert cow_pages.classify(server, None, bytes(after)) == ("new", [], 0)
    finally:
        server.close()


def test_one_forked_pod_is_surveyed() -> None:
    argv = [sys.executable, str(COW_PAGES), "--pods", "1", "--settle", "0.5"]
    result = subprocess.run(argv, capture_output=True, timeout=110)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    report = json.loads(result.stdout)
    for kind in ("daemon", "agent"):
        survey = report[kind]
        assert survey["pods"] == 1
        assert sum(survey["classes_kb"].values()) == survey["private_kb"] > 0
        assert 0 < survey["written_kb"] < survey["private_kb"]
        assert "str" in survey["refcount_pages_by_type"]
