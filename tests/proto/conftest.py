"""Fixtures for the protocol tests: `report` puts a line into pytest's terminal summary.

The conformance tests say how much they compared ("conformance: compared 75
messages, ..."); the line is printed at once (visible with -s) and repeated
in the summary at the end of every run, so it is seen without -s too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

REPORT_KEY = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    lines = request.config.stash.setdefault(REPORT_KEY, [])

    def add(line: str) -> None:
        print(line)
        lines.append(line)

    return add


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(REPORT_KEY, [])
    if lines:
        terminalreporter.section("protocol conformance")
        for line in lines:
            terminalreporter.write_line(line)
