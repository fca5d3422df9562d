"""Logging for every process: one JSON object per line (LOG_FORMAT=json, the default) or plain text.

Context travels as `extra=` fields with OpenIM's names (operationID, userID, conversationID, seq);
the JSON formatter copies whichever of them a record carries.
"""

from __future__ import annotations

import json
import logging
from typing import Any

CONTEXT_FIELDS = ("operationID", "userID", "platformID", "conversationID", "seq", "clientMsgID", "node", "errCode")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "":
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup(level: str, fmt: str) -> None:
    """Configure the root logger once per process (Celery is told not to take it over)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Neither format prints threadName: without it a record does not ask threading.current_thread(),
    # which under gevent makes a _DummyThread (a dozen GC-tracked objects) for every greenlet that
    # logs, e.g. each websocket session's, kept as long as the session
    logging.logThreads = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # library warnings become records too, not raw stderr lines


# Celery's loggers of the per-task lines ("Task ... received", "Task ... succeeded in ...")
TASK_LINE_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def quiet_task_lines(enabled: bool) -> None:
    """Raise Celery's per-task loggers to WARNING unless `enabled` (LOG_TASK_LINES): Celery reads
    their level once when a worker builds its task strategies, so this runs before the worker
    starts. Failures are logged at ERROR by the same loggers, so they still show."""
    if not enabled:
        for name in TASK_LINE_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
