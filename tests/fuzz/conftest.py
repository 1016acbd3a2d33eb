"""Print how many fuzz cases each operation got, and how they were answered, at the end of the run."""

from __future__ import annotations

import pytest

from tests.fuzz.wire import COUNTS, summary_lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if COUNTS:
        terminalreporter.section("API fuzz cases per operation")
        for line in summary_lines():
            terminalreporter.write_line(line)
