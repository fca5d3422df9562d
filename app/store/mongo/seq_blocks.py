"""The `seq` collection: each conversation's block allocator (`max_seq`, the end of the newest block
handed out, never lowered) and its `min_seq` (no seq below it is readable). MongoDB is the source of
truth behind the Redis allocator (app/seq_lua.py): a jump forward is fine, a reuse never is."""

from __future__ import annotations

import logging

from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from app.store.mongo.bulk import create_once
from app.store.mongo.client import get_db

log = logging.getLogger(__name__)


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


def take_seq_blocks(sizes: dict[str, int]) -> dict[str, int]:
    """`take_seq_block` for several conversations in three round trips (read, create the missing
    counters, one bulk compare-and-set), instead of two per conversation."""
    coll = get_db().seq
    convs = list(sizes)

    def read(ids: list[str]) -> dict[str, int]:
        docs = coll.find({"conversation_id": {"$in": ids}}, {"conversation_id": 1, "max_seq": 1})
        return {d["conversation_id"]: int(d["max_seq"]) for d in docs}

    current = read(convs)
    if missing := [c for c in convs if c not in current]:
        counters = [
            UpdateOne({"conversation_id": c}, {"$setOnInsert": {"max_seq": 0, "min_seq": 0}}, upsert=True)
            for c in missing
        ]
        create_once(coll, counters)
        current.update(read(missing))
    taken = coll.bulk_write(
        [UpdateOne({"conversation_id": c, "max_seq": current[c]}, {"$inc": {"max_seq": sizes[c]}}) for c in convs],
        ordered=False,
    )
    if taken.modified_count == len(convs):
        return {c: current[c] for c in convs}
    # Another allocator moved some counter first, and the counts do not say which: take every block
    # again one by one. The blocks this round did reserve are never handed out (a gap, never a reuse).
    log.warning("seq blocks for %d conversations raced another allocator: taking them one by one", len(convs))
    return {c: take_seq_block(c, sizes[c]) for c in convs}


def reserved_seq_end(conversation_id: str) -> int:
    """The end of the newest block MongoDB has handed out (0 before the first)."""
    doc = get_db().seq.find_one({"conversation_id": conversation_id}, {"max_seq": 1})
    return int(doc["max_seq"]) if doc else 0


def get_min_seqs(conversation_ids: list[str]) -> dict[str, int]:
    if not conversation_ids:
        return {}
    docs = get_db().seq.find({"conversation_id": {"$in": conversation_ids}}, {"conversation_id": 1, "min_seq": 1})
    return {d["conversation_id"]: int(d.get("min_seq", 0)) for d in docs}


def raise_min_seq(conversation_id: str, seq: int) -> None:
    """Nothing below `seq` is readable in the conversation any more, for anyone (never lowered)."""
    get_db().seq.update_one(
        {"conversation_id": conversation_id},
        {"$max": {"min_seq": seq}, "$setOnInsert": {"max_seq": 0}},
        upsert=True,
    )
