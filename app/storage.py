"""MongoDB: the collections, their indexes, and every query this project makes.

Collections follow OpenIM's models: `msg` (documents of 100 message slots), `seq` (per-conversation
block allocator), `conversation` (one record per owner and conversation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pymongo import ASCENDING, InsertOne, MongoClient, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.config import settings
from app.conversation import MSGS_PER_DOC, doc_id, doc_index, doc_slot

_client: MongoClient[dict[str, Any]] | None = None


def get_db() -> Database[dict[str, Any]]:
    global _client
    if _client is None:
        _client = MongoClient(settings.mongo_url, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000)
    return _client.get_default_database()


def ensure_indexes() -> None:
    db = get_db()
    db.msg.create_index([("doc_id", ASCENDING)], unique=True)
    db.seq.create_index([("conversation_id", ASCENDING)], unique=True)
    db.conversation.create_index([("owner_user_id", ASCENDING), ("conversation_id", ASCENDING)], unique=True)
    db.conversation.create_index([("conversation_id", ASCENDING)])
    db.seq_user.create_index([("user_id", ASCENDING), ("conversation_id", ASCENDING)], unique=True)


# --- seq blocks ------------------------------------------------------------------------------


def take_seq_block(conversation_id: str, size: int) -> int:
    """Atomically reserve `size` seqs; returns the max seq before the reservation.

    A compare-and-set (`$inc` only if max_seq is still what we read) rather than findAndModify:
    just as atomic, and on SecantusDB an indexed update is ten times cheaper than findAndModify.
    """
    coll = get_db().seq
    for _ in range(1000):
        doc = coll.find_one({"conversation_id": conversation_id}, {"max_seq": 1})
        if doc is None:
            # Create the counter first, never resetting one that exists (min_seq included).
            try:
                coll.update_one(
                    {"conversation_id": conversation_id},
                    {"$setOnInsert": {"max_seq": 0, "min_seq": 0}},
                    upsert=True,
                )
            except DuplicateKeyError:
                pass  # created by a concurrent allocator
            continue
        current = int(doc["max_seq"])
        taken = coll.update_one({"conversation_id": conversation_id, "max_seq": current}, {"$inc": {"max_seq": size}})
        if taken.modified_count == 1:
            return current
    raise RuntimeError(f"could not reserve seqs for {conversation_id}: constant contention")


def reserved_seq_end(conversation_id: str) -> int:
    """The end of the newest block MongoDB has handed out (0 before the first)."""
    doc = get_db().seq.find_one({"conversation_id": conversation_id}, {"max_seq": 1})
    return int(doc["max_seq"]) if doc else 0


def get_min_seqs(conversation_ids: list[str]) -> dict[str, int]:
    if not conversation_ids:
        return {}
    docs = get_db().seq.find({"conversation_id": {"$in": conversation_ids}}, {"conversation_id": 1, "min_seq": 1})
    return {d["conversation_id"]: int(d.get("min_seq", 0)) for d in docs}


# --- messages --------------------------------------------------------------------------------


def empty_slot() -> dict[str, Any]:
    return {"msg": None, "revoke": None, "del_list": [], "is_read": False}


def filled_slot(msg: dict[str, Any]) -> dict[str, Any]:
    return {"msg": msg, "revoke": None, "del_list": [], "is_read": False}


def write_msgs(conversation_id: str, msgs: Iterable[dict[str, Any]]) -> int:
    return write_runs([(conversation_id, list(msgs))])


def write_runs(runs: Iterable[tuple[str, list[dict[str, Any]]]]) -> int:
    """Write messages into their slots idempotently; returns the documents written.

    Two round trips for a whole batch, whatever the number of documents: which documents exist,
    then one bulk write that sets the slots of existing documents and inserts new full ones. An
    insert that lost a race with another writer becomes a slot update of the winner's document.
    """
    slots_by_doc: dict[str, dict[int, dict[str, Any]]] = {}
    for conversation_id, msgs in runs:
        for msg in msgs:
            seq = int(msg["seq"])
            slots_by_doc.setdefault(doc_id(conversation_id, seq), {})[doc_slot(seq)] = msg
    if not slots_by_doc:
        return 0
    coll = get_db().msg
    existing = {d["doc_id"] for d in coll.find({"doc_id": {"$in": list(slots_by_doc)}}, {"doc_id": 1})}

    def set_slots(current_doc_id: str) -> UpdateOne:
        slots = slots_by_doc[current_doc_id]
        return UpdateOne({"doc_id": current_doc_id}, {"$set": {f"msgs.{i}": filled_slot(m) for i, m in slots.items()}})

    ops: list[UpdateOne | InsertOne[dict[str, Any]]] = []
    op_doc_ids = list(slots_by_doc)
    for current_doc_id, slots in slots_by_doc.items():
        if current_doc_id in existing:
            ops.append(set_slots(current_doc_id))
            continue
        full = [empty_slot() for _ in range(MSGS_PER_DOC)]
        for i, m in slots.items():
            full[i] = filled_slot(m)
        ops.append(InsertOne({"doc_id": current_doc_id, "msgs": full}))
    try:
        coll.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(err.get("code") != 11000 for err in errors):
            raise
        # Another writer created these documents first: set our slots in them.
        coll.bulk_write([set_slots(op_doc_ids[err["index"]]) for err in errors], ordered=False)
    return len(slots_by_doc)


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


# --- conversations ---------------------------------------------------------------------------


def create_conversations_many(wanted: dict[str, tuple[list[str], int]]) -> None:
    """conversation -> (owners, conversation type): one record per owner, created once, in one
    round trip; later calls never overwrite what owners changed."""
    ops = [
        UpdateOne(
            {"owner_user_id": owner, "conversation_id": conv},
            {
                "$setOnInsert": {
                    "owner_user_id": owner,
                    "conversation_id": conv,
                    "conversation_type": conv_type,
                    "recv_msg_opt": 0,
                }
            },
            upsert=True,
        )
        for conv, (owners, conv_type) in wanted.items()
        for owner in owners
    ]
    if ops:
        try:
            get_db().conversation.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            # Concurrent creation of the same record is fine; anything else is not.
            if any(err.get("code") != 11000 for err in exc.details.get("writeErrors", [])):
                raise


def conversations_of(user_id: str) -> list[str]:
    docs = get_db().conversation.find({"owner_user_id": user_id}, {"conversation_id": 1})
    return [d["conversation_id"] for d in docs]


def owned_conversations(user_id: str, conversation_ids: list[str]) -> set[str]:
    docs = get_db().conversation.find(
        {"owner_user_id": user_id, "conversation_id": {"$in": conversation_ids}}, {"conversation_id": 1}
    )
    return {d["conversation_id"] for d in docs}


# --- per-user read state ---------------------------------------------------------------------


def raise_read_seqs(read_seqs: Iterable[tuple[str, str, int]]) -> None:
    """`seq_user` records (OpenIM's model): read_seq only moves forward, min_seq is never reset."""
    ops = [
        UpdateOne(
            {"user_id": user, "conversation_id": conv},
            {"$max": {"read_seq": seq}, "$setOnInsert": {"min_seq": 0, "max_seq": 0}},
            upsert=True,
        )
        for conv, user, seq in read_seqs
    ]
    if not ops:
        return
    try:
        get_db().seq_user.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        # Two writers created the same record at once: the losers' $max goes onto the winner's record.
        failed = [ops[err["index"]] for err in exc.details.get("writeErrors", []) if err.get("code") == 11000]
        if len(failed) != len(exc.details.get("writeErrors", [])):
            raise
        get_db().seq_user.bulk_write(failed, ordered=False)


def get_user_seqs(user_id: str, conversation_ids: list[str]) -> dict[str, dict[str, int]]:
    """conversation -> {min_seq, read_seq} of this user (OpenIM's seq_user)."""
    if not conversation_ids:
        return {}
    docs = get_db().seq_user.find(
        {"user_id": user_id, "conversation_id": {"$in": conversation_ids}},
        {"conversation_id": 1, "min_seq": 1, "read_seq": 1},
    )
    return {
        d["conversation_id"]: {"min_seq": int(d.get("min_seq", 0)), "read_seq": int(d.get("read_seq", 0))} for d in docs
    }
