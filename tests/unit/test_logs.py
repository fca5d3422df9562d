"""app/ops/logs.py: Celery's per-task lines stay out of the log unless LOG_TASK_LINES asks for them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from app.ops import logs


@pytest.fixture
def task_loggers_restored() -> Iterator[list[logging.Logger]]:
    loggers = [logging.getLogger(name) for name in logs.TASK_LINE_LOGGERS]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
    yield loggers
    for logger, level in zip(loggers, before, strict=True):
        logger.setLevel(level)


def test_per_task_lines_are_quiet_by_default_and_failures_still_show(
    task_loggers_restored: list[logging.Logger],
) -> None:
    logging.getLogger().setLevel(logging.INFO)
    logs.quiet_task_lines(False)
    for logger in task_loggers_restored:
        assert not logger.isEnabledFor(logging.INFO)  # "Task ... succeeded in ..."
        assert logger.isEnabledFor(logging.ERROR)  # "Task ... raised ..."


def test_log_task_lines_keeps_them(task_loggers_restored: list[logging.Logger]) -> None:
    logging.getLogger().setLevel(logging.INFO)
    logs.quiet_task_lines(True)
    assert all(logger.isEnabledFor(logging.INFO) for logger in task_loggers_restored)
