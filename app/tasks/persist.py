"""Persist stage: write committed messages into MongoDB's 100-slot documents, and read seqs.

Idempotent and order-insensitive: a redelivered batch sets the same slots again. The broker message
is acknowledged only after MongoDB confirmed every write (P1); while MongoDB is down the task waits
with capped backoff, and the Redis cache keeps serving the messages meanwhile.

The unit of failure is one message (P7): a message MongoDB refuses (a NUL or `$` in a key, too large,
a write error that is not an outage) is dead-lettered alone; the batch's other runs and the other
messages of its run are written (its slot stays empty and pulls as a status-4 placeholder).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from bson.errors import InvalidDocument
from pymongo.errors import BulkWriteError, DocumentTooLarge, WriteError

from app.celery_app import celery_app
from app.config import settings
from app.core import quarantine
from app.core.conversation import doc_id
from app.ops import metrics
from app.pipeline import dead_letters
from app.pipeline import journal as hand_offs
from app.pipeline.backoff import until_done
from app.store.mongo import messages, seq_users
from app.tasks import webhooks as webhook_tasks
from app.tasks.batching import BatchedTask, Call

log = logging.getLogger(__name__)

Run = tuple[str, list[dict[str, Any]]]

# MongoDB's codes for a server stepping down or shutting down: an outage, whatever the error class.
OUTAGE_CODES = frozenset({6, 7, 50, 64, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})


class NonContiguousRun(ValueError):
    """Transfer hands over runs of consecutive seqs; anything else is a bug upstream."""


def check_run(conversation_id: str, msgs: list[dict[str, Any]]) -> None:
    seqs = [int(m.get("seq", 0)) for m in msgs]
    if not seqs or seqs[0] < 1 or seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise NonContiguousRun(f"{conversation_id}: seqs {seqs[:10]} are not one contiguous run")


def refused_message(exc: BaseException) -> bool:
    """True when MongoDB (or its driver) refuses what was written rather than being unavailable."""
    if isinstance(exc, BulkWriteError):
        if exc.details.get("writeConcernErrors"):
            return False
        codes = {err.get("code") for err in exc.details.get("writeErrors", [])}
        return bool(codes) and not codes & OUTAGE_CODES
    if isinstance(exc, WriteError):
        return exc.code not in OUTAGE_CODES
    return isinstance(
        exc, (InvalidDocument, DocumentTooLarge, OverflowError, UnicodeEncodeError, TypeError, ValueError, KeyError)
    )


def dead_letter(conv: str, msgs: list[Any], reason: str, error: BaseException | None = None) -> None:
    """Keep what MongoDB will not take, with its reason; redriven as a persist batch of its own."""
    until_done(
        partial(
            dead_letters.put,
            "persist",
            reason,
            dead_letters.task_payload("persist", [[[conv, msgs]], []]),
            conversation=conv,
            error=error,
        ),
        "dead letter",
    )


def split_runs(runs: list[Any]) -> list[Run]:
    """The runs to write: a broken run is dead-lettered whole (a bug upstream), a message MongoDB
    could not store is dead-lettered alone and its run split around it."""
    good: list[Run] = []
    for run in runs:
        conv, msgs = run if isinstance(run, (list, tuple)) and len(run) == 2 else ("", [run])
        try:
            if not isinstance(conv, str) or not isinstance(msgs, list):
                raise NonContiguousRun(f"a run is [conversation, messages], not {str(run)[:80]}")
            check_run(conv, msgs)
        except (NonContiguousRun, TypeError, ValueError, AttributeError) as exc:
            # Never write it silently: log it and keep it for an operator; the other runs go on.
            log.exception("refusing to persist a broken run", extra={"conversationID": str(conv)})
            dead_letter(str(conv), msgs if isinstance(msgs, list) else [msgs], f"broken run: {exc}", exc)
            continue
        storable: list[dict[str, Any]] = []
        for msg in msgs:
            try:
                quarantine.check_stored_message(msg)
            except quarantine.Refused as exc:
                dead_letter(conv, [msg], f"not storable: {exc}", exc)
                continue
            storable.append(msg)
        if storable:
            good.append((conv, storable))
    return good


def write(runs: list[Run]) -> int:
    return until_done(
        partial(messages.write_runs, runs),
        "persist batch",
        on_retry=lambda _exc: metrics.MSG_INSERT_MONGO_FAILED.inc(),
    )


def write_isolated(runs: list[Run]) -> tuple[int, int]:
    """All runs in one round trip; if MongoDB refuses that, one message at a time, so only the
    message it refuses is dead-lettered. Outages are waited out (P1); an error that is neither
    an outage nor a refusal of one message is raised (the journal runs the hand-off again).
    Returns (documents, messages) written."""
    try:
        return write(runs), sum(len(msgs) for _, msgs in runs)
    except Exception as exc:
        if not refused_message(exc):
            raise
        log.warning("MongoDB refused a persist batch (%r): writing one message at a time", exc)
    written: set[str] = set()
    stored = 0
    for conv, msgs in runs:
        for msg in msgs:
            try:
                write([(conv, [msg])])
            except Exception as exc:
                if not refused_message(exc):
                    raise
                dead_letter(conv, [msg], f"MongoDB refused it: {exc!r}"[:300], exc)
                continue
            written.add(doc_id(conv, int(msg["seq"])))
            stored += 1
    return len(written), stored


def raise_read_seqs_isolated(triples: list[tuple[str, str, int]]) -> None:
    try:
        until_done(partial(seq_users.raise_read_seqs, triples), "persist read seqs")
        return
    except Exception as exc:
        if not refused_message(exc):
            raise
        log.warning("MongoDB refused read seqs (%r): writing them one at a time", exc)
    for triple in triples:
        try:
            until_done(partial(seq_users.raise_read_seqs, [triple]), "persist read seq")
        except Exception as exc:
            if not refused_message(exc):
                raise
            until_done(
                partial(
                    dead_letters.put,
                    "persist",
                    f"MongoDB refused a read seq: {exc!r}"[:300],
                    dead_letters.task_payload("persist", [[], [list(triple)]]),
                    conversation=triple[0],
                    error=exc,
                ),
                "dead letter",
            )


def store(runs: list[Any], read_seqs: list[Any] | None) -> int:
    """Write runs and read seqs (each part's bad units dead-lettered alone); returns documents written."""
    good = split_runs(runs)
    written, stored = write_isolated(good)
    metrics.MSG_INSERT_MONGO_SUCCESS.inc(stored)
    saved = [m for _, msgs in good for m in msgs]
    if stored == len(saved):
        webhook_tasks.after_saved(saved)
    else:  # which ones MongoDB refused is in the dead letters; say it rather than guess
        log.warning(
            "afterMsgSaveDB not called for a batch MongoDB refused part of (%d of %d stored)", stored, len(saved)
        )
    if read_seqs:
        triples: list[tuple[str, str, int]] = []
        for triple in read_seqs:
            try:
                conv, user, seq = triple
                triples.append((str(conv), str(user), int(seq)))
            except (TypeError, ValueError) as exc:
                until_done(
                    partial(
                        dead_letters.put,
                        "persist",
                        f"malformed read seq: {exc}",
                        dead_letters.task_payload("persist", [[], [triple]]),
                        error=exc,
                    ),
                    "dead letter",
                )
        if triples:
            raise_read_seqs_isolated(highest_read_seqs(triples))
    return written


def highest_read_seqs(triples: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """One (conversation, user) once, with its highest seq: read seqs only move forward."""
    best: dict[tuple[str, str], int] = {}
    for conv, user, seq in triples:
        key = (conv, user)
        best[key] = max(seq, best.get(key, seq))
    return [(conv, user, seq) for (conv, user), seq in best.items()]


PARAMS = ("runs", "read_seqs", "journal")


def merge_calls(calls: list[Call]) -> tuple[list[Any], list[Any], list[list[str] | None]]:
    """Many persist.batch calls as one: (runs, read seqs, journal entries). Raises TypeError on a
    call that does not fit the task's signature (then each runs alone and fails alone)."""
    runs: list[Any] = []
    read_seqs: list[Any] = []
    journals: list[list[str] | None] = []
    for args, kwargs in calls:
        if len(args) > len(PARAMS) or set(kwargs) - set(PARAMS):
            raise TypeError(f"persist.batch takes {PARAMS}, not {len(args)} args and {sorted(kwargs)}")
        bound = dict(zip(PARAMS, args, strict=False)) | kwargs
        if not isinstance(bound.get("runs"), list) or not isinstance(bound.get("read_seqs") or [], list):
            raise TypeError("persist.batch: runs and read_seqs are lists")
        runs.extend(bound["runs"])
        read_seqs.extend(bound.get("read_seqs") or [])
        journals.append(bound.get("journal"))
    return runs, read_seqs, journals


def journal_of(call: Call) -> Any:
    args, kwargs = call
    return kwargs["journal"] if "journal" in kwargs else (args[2] if len(args) > 2 else None)


class PersistTask(BatchedTask):
    """The persist worker merges up to PERSIST_BATCH_MAX hand-offs (or what arrived within
    PERSIST_BATCH_LINGER_MS, or until none came for PERSIST_BATCH_QUIET_MS) into one write per slot
    document (app/tasks/batching.py)."""

    batch_max = settings.persist_batch_max
    batch_linger_s = settings.persist_batch_linger_ms / 1000.0
    batch_quiet_s = settings.persist_batch_quiet_ms / 1000.0

    def kept_elsewhere(self, call: Call) -> bool:
        """A journaled hand-off on a Redis broker: its journal entry keeps it until written."""
        return hand_offs.JOURNALING and hand_offs.names_entry(journal_of(call))

    def run_many(self, calls: list[Call]) -> None:
        runs, read_seqs, journals = merge_calls(calls)
        store(runs, read_seqs)
        until_done(partial(hand_offs.done_many, journals), "persist journal")


@celery_app.task(name="persist.batch", acks_late=True, base=PersistTask)
def persist_batch(
    runs: list[list[Any]], read_seqs: list[list[Any]] | None = None, journal: list[str] | None = None
) -> int:
    """`runs` is [[conversation, messages of consecutive seqs], ...]; returns documents written.
    `journal` names the hand-off's journal entry (Redis broker), removed once it is done."""
    written = store(runs, read_seqs)
    until_done(partial(hand_offs.done, journal), "persist journal")
    return written
