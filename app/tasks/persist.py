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
from app.config import settings
from app.group_commit import GroupCommit

log = logging.getLogger(__name__)

DEAD_LETTER_KEY = "DEAD_LETTER:persist"


Runs = list[tuple[str, list[dict[str, Any]]]]
ReadSeqs = list[tuple[str, str, int]]  # (conversation, user, read seq)


def highest_read_seqs(batches: list[ReadSeqs]) -> ReadSeqs:
    """One record per reader and conversation: the highest read seq any of the batches carries."""
    highest: dict[tuple[str, str], int] = {}
    for read_seqs in batches:
        for conv, user, seq in read_seqs:
            highest[(conv, user)] = max(seq, highest.get((conv, user), 0))
    return [(conv, user, seq) for (conv, user), seq in highest.items()]


def write_merged(work: list[tuple[Runs, ReadSeqs]]) -> None:
    """Several tasks' writes as one: each slot document and each reader's record is written once."""
    storage.write_runs(run for runs, _ in work for run in runs)
    if read_seqs := highest_read_seqs([read_seqs for _, read_seqs in work]):
        storage.raise_read_seqs(read_seqs)


# The tasks running side by side in the worker's thread pool share their MongoDB writes.
mongo_writes: GroupCommit[tuple[Runs, ReadSeqs]] = GroupCommit(
    write_merged, linger_seconds=settings.persist_linger_ms / 1000
)


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
    """`runs` is [[conversation, messages of consecutive seqs], ...]; returns messages written.
    `journal` names the hand-off's journal entry (Redis broker), removed once it is done."""
    good: Runs = []
    for conv, msgs in runs:
        try:
            check_run(conv, msgs)
        except NonContiguousRun:
            # Never write it silently: log it and keep it for an operator; the other runs go on.
            log.exception("refusing to persist a broken run", extra={"conversationID": conv})
            cache.get_redis().rpush(DEAD_LETTER_KEY, json.dumps([conv, msgs]))
            continue
        good.append((conv, msgs))
    triples = [(str(conv), str(user), int(seq)) for conv, user, seq in read_seqs or []]
    until_done(
        partial(mongo_writes.submit, (good, triples)),
        "persist batch",
        on_retry=lambda _exc: metrics.MSG_INSERT_MONGO_FAILED.inc(),
    )
    metrics.MSG_INSERT_MONGO_SUCCESS.inc(sum(len(msgs) for _, msgs in good))
    until_done(partial(hand_offs.done, journal), "persist journal")
    return sum(len(msgs) for _, msgs in good)
