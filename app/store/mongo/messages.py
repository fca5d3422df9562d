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
from app.store.mongo.client import get_db


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
        slots = slots_by_doc[current_doc_id]
        return UpdateOne({"doc_id": current_doc_id}, {"$set": {f"msgs.{i}": filled_slot(m) for i, m in slots.items()}})

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
            if slot and slot.get("msg"):
                out[seq] = slot["msg"]
    return out


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
