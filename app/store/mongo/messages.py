"""The `msg` collection: documents of 100 message slots, `doc_id = conversationID:index` (the slot
math is app/core/conversation.py), written idempotently and read slot by slot."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError

from app.core.conversation import MSGS_PER_DOC, doc_id, doc_index, doc_slot
from app.store.mongo.bulk import create_once
from app.store.mongo.client import get_db

PHYSICALLY_DELETED = "deleted"  # a slot an admin emptied: never readable again


def empty_slot() -> dict[str, Any]:
    return {"msg": None, "revoke": None, "del_list": [], "is_read": False}


def filled_slot(msg: dict[str, Any]) -> dict[str, Any]:
    return {"msg": msg, "revoke": None, "del_list": [], "is_read": False}


def write_msgs(conversation_id: str, msgs: Iterable[dict[str, Any]]) -> int:
    return write_runs([(conversation_id, list(msgs))])


# Documents this process wrote or found: their slots are set without asking MongoDB first whether
# they exist (SecantusDB decodes each whole 100-slot document to answer that). Documents are never
# deleted by this project; should one be gone all the same (a dropped collection), the bulk write
# matches fewer documents than it updated and the batch is written again the careful way.
KNOWN_DOCS_MAX = 200_000
_known_docs: dict[str, None] = {}
_known_lock = threading.Lock()  # the persist worker's journal sweeper writes from a thread of its own


def _remember(doc_ids: Iterable[str]) -> None:
    with _known_lock:
        for current_doc_id in doc_ids:
            _known_docs[current_doc_id] = None
        while len(_known_docs) > KNOWN_DOCS_MAX:  # oldest first (dicts keep insertion order)
            del _known_docs[next(iter(_known_docs))]


def forget_known_docs() -> None:
    with _known_lock:
        _known_docs.clear()


def write_runs(runs: Iterable[tuple[str, list[dict[str, Any]]]]) -> int:
    """Write messages into their slots idempotently; returns the documents written.

    Two round trips for a whole batch, whatever the number of documents: which documents exist
    (only those this process does not know yet), then one bulk write that sets the slots of
    existing documents and inserts new full ones. An insert that lost a race with another writer
    becomes a slot update of the winner's document.
    """
    slots_by_doc: dict[str, dict[int, dict[str, Any]]] = {}
    for conversation_id, msgs in runs:
        for msg in msgs:
            seq = int(msg["seq"])
            slots_by_doc.setdefault(doc_id(conversation_id, seq), {})[doc_slot(seq)] = msg
    if not slots_by_doc:
        return 0
    if not _write_slots(slots_by_doc, trust_known=True):
        # A document this process knew is gone: ask MongoDB about every one and write again.
        forget_known_docs()
        _write_slots(slots_by_doc, trust_known=False)
    _remember(slots_by_doc)
    return len(slots_by_doc)


def _write_slots(slots_by_doc: dict[str, dict[int, dict[str, Any]]], trust_known: bool) -> bool:
    """One bulk write; False when an update matched fewer documents than it was sent to."""
    coll = get_db().msg
    unknown = [d for d in slots_by_doc if not (trust_known and d in _known_docs)]
    existing = set(slots_by_doc) - set(unknown)
    if unknown:
        existing |= {d["doc_id"] for d in coll.find({"doc_id": {"$in": unknown}}, {"doc_id": 1})}

    def set_slots(current_doc_id: str) -> UpdateOne:
        # Only each slot's message: its revoke record and del_list may already be written (a revoke
        # or delete can overtake persist) and a rewrite must keep them.
        slots = slots_by_doc[current_doc_id]
        return UpdateOne({"doc_id": current_doc_id}, {"$set": {f"msgs.{i}.msg": m for i, m in slots.items()}})

    ops: list[UpdateOne | InsertOne[dict[str, Any]]] = []
    op_doc_ids = list(slots_by_doc)
    updates = 0
    for current_doc_id, slots in slots_by_doc.items():
        if current_doc_id in existing:
            ops.append(set_slots(current_doc_id))
            updates += 1
            continue
        full = [empty_slot() for _ in range(MSGS_PER_DOC)]
        for i, m in slots.items():
            full[i] = filled_slot(m)
        ops.append(InsertOne({"doc_id": current_doc_id, "msgs": full}))
    try:
        matched = coll.bulk_write(ops, ordered=False).matched_count
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(err.get("code") != 11000 for err in errors):
            raise
        # Another writer created these documents first: set our slots in them.
        coll.bulk_write([set_slots(op_doc_ids[err["index"]]) for err in errors], ordered=False)
        matched = int(exc.details.get("nMatched", updates))
    return matched >= updates


def find_msgs(conversation_id: str, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Stored messages by seq, reading only the slots needed ($slice) of each document."""
    wanted = sorted(set(seqs))
    by_doc: dict[int, list[int]] = {}
    for seq in wanted:
        by_doc.setdefault(doc_index(seq), []).append(seq)
    out: dict[int, dict[str, Any]] = {}
    coll = get_db().msg
    for doc_seqs in by_doc.values():
        first_slot = doc_slot(doc_seqs[0])
        count = doc_slot(doc_seqs[-1]) - first_slot + 1
        doc = coll.find_one(
            {"doc_id": doc_id(conversation_id, doc_seqs[0])},
            {"_id": 0, "msgs": {"$slice": [first_slot, count]}},
        )
        if doc is None:
            continue
        slots = doc.get("msgs") or []
        for seq in doc_seqs:
            offset = doc_slot(seq) - first_slot
            slot = slots[offset] if offset < len(slots) else None
            if slot and slot.get("msg") and not slot.get(PHYSICALLY_DELETED):
                out[seq] = with_marks(slot)
    return out


def with_marks(slot: dict[str, Any]) -> dict[str, Any]:
    """The slot's message with its revoke record and del_list beside its fields (app/core/msg_ops.py)."""
    msg = dict(slot["msg"])
    if slot.get("revoke"):
        msg["revoke"] = slot["revoke"]
    if slot.get("del_list"):
        msg["del_list"] = list(slot["del_list"])
    return msg


def _ensure_docs(conversation_id: str, seqs: Iterable[int]) -> None:
    """Create the documents these seqs live in, if missing (a revoke or delete may overtake persist)."""
    ops = [
        UpdateOne({"doc_id": d}, {"$setOnInsert": {"msgs": [empty_slot() for _ in range(MSGS_PER_DOC)]}}, upsert=True)
        for d in sorted({doc_id(conversation_id, s) for s in seqs})
    ]
    create_once(get_db().msg, ops)


def set_revoke(conversation_id: str, seq: int, revoke: dict[str, Any]) -> bool:
    """Write the slot's revoke record unless it has one (kept by later message rewrites, see
    write_runs): True when this call wrote it, False when the message was revoked already."""
    _ensure_docs(conversation_id, [seq])
    doc = get_db().msg.find_one(
        {"doc_id": doc_id(conversation_id, seq)}, {"_id": 0, "msgs": {"$slice": [doc_slot(seq), 1]}}
    )
    if doc and (doc.get("msgs") or [{}])[0].get("revoke"):
        return False
    # The filter makes the check atomic on MongoDB; SecantusDB matches `msgs.<i>.revoke: null` for
    # any slot, so there the read above is the check (a concurrent second revoke may overwrite the
    # record; its tips is still sent once: app/services/revoke.py).
    field = f"msgs.{doc_slot(seq)}.revoke"
    written = get_db().msg.update_one({"doc_id": doc_id(conversation_id, seq), field: None}, {"$set": {field: revoke}})
    return written.modified_count == 1


def add_to_del_list(conversation_id: str, seqs: Iterable[int], user_id: str) -> None:
    """The user deleted these messages for themselves: one update per document."""
    by_doc: dict[str, list[int]] = {}
    for seq in seqs:
        by_doc.setdefault(doc_id(conversation_id, seq), []).append(seq)
    if not by_doc:
        return
    _ensure_docs(conversation_id, [s for doc_seqs in by_doc.values() for s in doc_seqs])
    ops = [
        UpdateOne({"doc_id": d}, {"$addToSet": {f"msgs.{doc_slot(s)}.del_list": user_id for s in doc_seqs}})
        for d, doc_seqs in by_doc.items()
    ]
    get_db().msg.bulk_write(ops, ordered=False)


def delete_physically(conversation_id: str, seqs: Iterable[int]) -> None:
    """Empty these slots for everyone; the mark keeps a late persist of the same seq unreadable."""
    by_doc: dict[str, list[int]] = {}
    for seq in seqs:
        by_doc.setdefault(doc_id(conversation_id, seq), []).append(seq)
    if not by_doc:
        return
    _ensure_docs(conversation_id, [s for doc_seqs in by_doc.values() for s in doc_seqs])
    gone = {**empty_slot(), PHYSICALLY_DELETED: True}
    ops = [UpdateOne({"doc_id": d}, {"$set": {f"msgs.{doc_slot(s)}": gone for s in ss}}) for d, ss in by_doc.items()]
    get_db().msg.bulk_write(ops, ordered=False)


def last_seq_before(conversation_id: str, before_ms: int) -> int:
    """The highest stored seq of a message sent before `before_ms` (0: none)."""
    prefix = f"{conversation_id}:"
    best = 0
    for d in get_db().msg.find({"doc_id": {"$regex": f"^{re.escape(prefix)}"}}):
        tail = d["doc_id"][len(prefix) :]
        if not tail.isdigit():
            continue
        for slot_index, slot in enumerate(d.get("msgs") or []):
            msg = (slot or {}).get("msg")
            if msg and int(msg.get("send_time", 0)) < before_ms:
                best = max(best, int(tail) * MSGS_PER_DOC + slot_index + 1)
    return best


def max_stored_seq(conversation_id: str) -> int:
    """The highest seq persisted in MongoDB (used when Redis lost the visible max)."""
    prefix = f"{conversation_id}:"
    best_index = -1
    for d in get_db().msg.find({"doc_id": {"$regex": f"^{re.escape(prefix)}"}}, {"doc_id": 1}):
        tail = d["doc_id"][len(prefix) :]
        if tail.isdigit():
            best_index = max(best_index, int(tail))
    if best_index < 0:
        return 0
    doc = get_db().msg.find_one({"doc_id": f"{prefix}{best_index}"})
    if doc is None:
        return 0
    for slot in range(MSGS_PER_DOC - 1, -1, -1):
        entry = doc["msgs"][slot]
        if entry and entry.get("msg"):
            return best_index * MSGS_PER_DOC + slot + 1
    return 0


def delete_through(conversation_id: str, cut: int) -> None:
    """Every message up to seq `cut` gone: whole documents deleted, the partial one's slots emptied."""
    prefix = f"{conversation_id}:"
    whole = [
        d["doc_id"]
        for d in get_db().msg.find({"doc_id": {"$regex": f"^{re.escape(prefix)}"}}, {"doc_id": 1})
        if d["doc_id"][len(prefix) :].isdigit() and (int(d["doc_id"][len(prefix) :]) + 1) * MSGS_PER_DOC <= cut
    ]
    if whole:
        get_db().msg.delete_many({"doc_id": {"$in": whole}})
    partial_start = (cut // MSGS_PER_DOC) * MSGS_PER_DOC + 1
    if partial_start <= cut:
        delete_physically(conversation_id, range(partial_start, cut + 1))
