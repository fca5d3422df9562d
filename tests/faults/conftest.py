"""Prints the fault suite's table at the end of the run, whatever pytest captured."""

from __future__ import annotations

import pytest

HEADER = [
    "scenario",
    "broker",
    "acked",
    "persisted",
    "lost",
    "duplicated",
    "out of order",
    "unreadable",
    "missed",
    "recover s",
]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.faults.scenarios import RESULTS

    if not RESULTS:
        return
    widths = [max(len(row[i]) for row in [HEADER, *RESULTS]) for i in range(len(HEADER))]
    terminalreporter.section("fault suite")
    for row in [HEADER, *RESULTS]:
        terminalreporter.write_line("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
