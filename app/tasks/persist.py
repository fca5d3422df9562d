"""Persist stage: write committed messages into MongoDB's 100-slot documents, and read seqs.

Idempotent and order-insensitive: a redelivered batch sets the same slots again. The broker message
is acknowledged only after MongoDB confirmed every write (P1); while MongoDB is down the task waits
with capped backoff, and the Redis cache keeps serving the messages meanwhile.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

from app import cache, metrics, storage
from app import journal as hand_offs
from app.backoff import until_done
from app.celery_app import celery_app

log = logging.getLogger(__name__)

DEAD_LETTER_KEY = "DEAD_LETTER:persist"


class NonContiguousRun(ValueError):
    """Transfer hands over runs of consecutive seqs; anything else is a bug upstream."""


def check_run(conversation_id: str, msgs: list[dict[str, Any]]) -> None:
    seqs = [int(m.get("seq", 0)) for m in msgs]
    if not seqs or seqs[0] < 1 or seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise NonContiguousRun(f"{conversation_id}: seqs {seqs[:10]} are not one contiguous run")


@celery_app.task(name="persist.batch", acks_late=True)
def persist_batch(
    runs: list[list[Any]], read_seqs: list[list[Any]] | None = None, journal: list[str] | None = None
) -> int:
    """`runs` is [[conversation, messages of consecutive seqs], ...]; returns documents written.
    `journal` names the hand-off's journal entry (Redis broker), removed once it is done."""
    good: list[tuple[str, list[dict[str, Any]]]] = []
    for conv, msgs in runs:
        try:
            check_run(conv, msgs)
        except NonContiguousRun:
            # Never write it silently: log it and keep it for an operator; the other runs go on.
            log.exception("refusing to persist a broken run", extra={"conversationID": conv})
            cache.get_redis().rpush(DEAD_LETTER_KEY, json.dumps([conv, msgs]))
            continue
        good.append((conv, msgs))
    written = until_done(
        partial(storage.write_runs, good),
        "persist batch",
        on_retry=lambda _exc: metrics.MSG_INSERT_MONGO_FAILED.inc(),
    )
    metrics.MSG_INSERT_MONGO_SUCCESS.inc(sum(len(msgs) for _, msgs in good))
    if read_seqs:
        triples = [(str(conv), str(user), int(seq)) for conv, user, seq in read_seqs]
        until_done(partial(storage.raise_read_seqs, triples), "persist read seqs")
    until_done(partial(hand_offs.done, journal), "persist journal")
    return written
