"""The shared process logger adapter: one prefix format for shim and agent, ids as fields."""

from __future__ import annotations

import logging

import pytest

from kata_shim.logids import id_logger


@pytest.mark.parametrize(("exec_id", "prefix"), [("", "[c1] "), ("e1", "[c1/e1] ")])
def test_prefix_and_fields(caplog: pytest.LogCaptureFixture, exec_id: str, prefix: str) -> None:
    logger = logging.getLogger("tests.logids")
    with caplog.at_level(logging.INFO, logger="tests.logids"):
        id_logger(logger, "c1", exec_id).info("started (pid %d)", 7)
    (record,) = caplog.records
    assert record.getMessage() == f"{prefix}started (pid 7)"
    assert (record.container, record.exec) == ("c1", exec_id)  # type: ignore[attr-defined]
