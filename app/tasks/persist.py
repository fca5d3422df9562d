"""Persist stage: write committed messages into MongoDB's 100-slot documents, and read seqs.

Idempotent and order-insensitive: a redelivered batch sets the same slots again. The broker message
is acknowledged only after MongoDB confirmed every write (P1); while MongoDB is down the task waits
with capped backoff, and the Redis cache keeps serving the messages meanwhile.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from app import storage
from app.backoff import until_done
from app.celery_app import celery_app

log = logging.getLogger(__name__)


@celery_app.task(name="persist.batch", acks_late=True)
def persist_batch(committed: dict[str, list[dict[str, Any]]], read_seqs: list[list[Any]] | None = None) -> int:
    written = 0
    for conv, msgs in committed.items():
        written += until_done(partial(storage.write_msgs, conv, msgs), f"persist {conv}")
    if read_seqs:
        triples = [(str(conv), str(user), int(seq)) for conv, user, seq in read_seqs]
        until_done(partial(storage.raise_read_seqs, triples), "persist read seqs")
    return written
