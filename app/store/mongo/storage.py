"""MongoDB: the collections, their indexes, and every query this project makes.

Collections follow OpenIM's models: `msg` (documents of 100 message slots), `seq` (per-conversation
block allocator), `conversation` (one record per owner and conversation).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from pymongo import ASCENDING, InsertOne, MongoClient, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.config import settings
from app.core.conversation import MSGS_PER_DOC, doc_id, doc_index, doc_slot

log = logging.getLogger(__name__)

_client: MongoClient[dict[str, Any]] | None = None


def get_db() -> Database[dict[str, Any]]:
    global _client
    if _client is None:
        _client = MongoClient(settings.mongo_url, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000)
    return _client.get_default_database()


def ping() -> None:
    get_db().command("ping")


def ensure_indexes() -> None:
    db = get_db()
    db.msg.create_index([("doc_id", ASCENDING)], unique=True)
    db.seq.create_index([("conversation_id", ASCENDING)], unique=True)
    db.conversation.create_index([("owner_user_id", ASCENDING), ("conversation_id", ASCENDING)], unique=True)
    db.conversation.create_index([("conversation_id", ASCENDING)])
    db.seq_user.create_index([("user_id", ASCENDING), ("conversation_id", ASCENDING)], unique=True)
    db.group_member.create_index([("group_id", ASCENDING), ("user_id", ASCENDING)], unique=True)
    db.group_member.create_index([("user_id", ASCENDING)])


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
        _create_once(coll, counters)
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


# --- upserts racing other writers -----------------------------------------------------------


def _create_once(coll: Any, ops: list[UpdateOne]) -> None:
    """`$setOnInsert` upserts: another writer creating the same record first is fine; anything else is not."""
    if not ops:
        return
    try:
        coll.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        if any(err.get("code") != 11000 for err in exc.details.get("writeErrors", [])):
            raise


def _upsert_retrying_races(coll: Any, ops: list[UpdateOne]) -> None:
    """Upserts whose update must land: an upsert that lost a concurrent insert of the same record
    (11000) is run again, now as an update of the winner's record."""
    if not ops:
        return
    try:
        coll.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        failed = [ops[err["index"]] for err in errors if err.get("code") == 11000]
        if len(failed) != len(errors):
            raise
        coll.bulk_write(failed, ordered=False)


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
    _create_once(get_db().conversation, ops)


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
    _upsert_retrying_races(get_db().seq_user, ops)


def get_user_seqs(user_id: str, conversation_ids: list[str]) -> dict[str, dict[str, int]]:
    """conversation -> {min_seq, max_seq, read_seq} of this user (OpenIM's seq_user)."""
    if not conversation_ids:
        return {}
    docs = get_db().seq_user.find(
        {"user_id": user_id, "conversation_id": {"$in": conversation_ids}},
        {"conversation_id": 1, "min_seq": 1, "max_seq": 1, "read_seq": 1},
    )
    fields = ("min_seq", "max_seq", "read_seq")
    return {d["conversation_id"]: {f: int(d.get(f, 0)) for f in fields} for d in docs}


# --- groups (OpenIM's `group` and `group_member`) --------------------------------------------

GROUP_STATUS_OK = 0
GROUP_STATUS_DISMISSED = 2
ROLE_OWNER = 100
ROLE_MEMBER = 20


def insert_group(group: dict[str, Any]) -> bool:
    """False when the group id is taken."""
    try:
        get_db().group.insert_one({"_id": group["group_id"], **group})
    except DuplicateKeyError:
        return False
    return True


def find_group(group_id: str) -> dict[str, Any] | None:
    return get_db().group.find_one({"_id": group_id}, {"_id": 0})


def set_group_status(group_id: str, status: int) -> None:
    get_db().group.update_one({"_id": group_id}, {"$set": {"status": status}})


def add_group_members(group_id: str, members: dict[str, int], join_time: int) -> None:
    """user -> role level; re-adding a member keeps the first record."""
    ops = [
        UpdateOne(
            {"group_id": group_id, "user_id": user_id},
            {"$setOnInsert": {"group_id": group_id, "user_id": user_id, "role_level": role, "join_time": join_time}},
            upsert=True,
        )
        for user_id, role in members.items()
    ]
    _create_once(get_db().group_member, ops)


def remove_group_members(group_id: str, user_ids: list[str]) -> None:
    get_db().group_member.delete_many({"group_id": group_id, "user_id": {"$in": user_ids}})


def group_member_ids(group_id: str) -> list[str]:
    return [d["user_id"] for d in get_db().group_member.find({"group_id": group_id}, {"user_id": 1})]


def group_members(group_id: str) -> list[dict[str, Any]]:
    return list(get_db().group_member.find({"group_id": group_id}, {"_id": 0}).sort("join_time", ASCENDING))


def group_member_roles(group_id: str) -> dict[str, int]:
    """user -> role level of each member."""
    docs = get_db().group_member.find({"group_id": group_id}, {"user_id": 1, "role_level": 1})
    return {d["user_id"]: int(d.get("role_level", ROLE_MEMBER)) for d in docs}


def groups_of(user_id: str) -> list[str]:
    """The user's groups, the newest joined first."""
    docs = get_db().group_member.find({"user_id": user_id}, {"group_id": 1, "join_time": 1})
    return [d["group_id"] for d in sorted(docs, key=lambda d: (-int(d.get("join_time", 0)), d["group_id"]))]


def set_member_seq_bounds(conversation_id: str, user_ids: list[str], min_seq: int | None, max_seq: int) -> None:
    """A member reads from min_seq (set on joining: no history before it) up to max_seq (set on
    leaving: nothing after it; 0 = no upper bound)."""
    update: dict[str, Any] = {"$set": {"max_seq": max_seq}}
    if min_seq is not None:
        update["$set"]["min_seq"] = min_seq
        update["$setOnInsert"] = {"read_seq": 0}
    else:
        update["$setOnInsert"] = {"read_seq": 0, "min_seq": 0}
    ops = [UpdateOne({"user_id": u, "conversation_id": conversation_id}, update, upsert=True) for u in user_ids]
    _upsert_retrying_races(get_db().seq_user, ops)


# --- receive options (OpenIM's recvMsgOpt) ---------------------------------------------------

RECV_AND_NOTIFY = 0
NOT_RECEIVE = 1
RECEIVE_WITHOUT_NOTIFY = 2
RECV_MSG_OPTS = (RECV_AND_NOTIFY, NOT_RECEIVE, RECEIVE_WITHOUT_NOTIFY)


def set_recv_msg_opt(owner_user_id: str, conversation_id: str, opt: int) -> bool:
    """Set an owner's recvMsgOpt on their conversation record; False when they have no such record.

    Never creates a record: `conversation` records are also what lets a user read a conversation.
    """
    if opt not in RECV_MSG_OPTS:
        raise ValueError(f"recvMsgOpt must be one of {RECV_MSG_OPTS}, not {opt!r}")
    result = get_db().conversation.update_one(
        {"owner_user_id": owner_user_id, "conversation_id": conversation_id}, {"$set": {"recv_msg_opt": opt}}
    )
    return result.matched_count == 1


def recv_msg_opts(conversation_id: str, user_ids: list[str]) -> dict[str, int]:
    """user -> recvMsgOpt for this conversation; users without a record receive and are notified (0)."""
    opts = dict.fromkeys(user_ids, RECV_AND_NOTIFY)
    if not user_ids:
        return opts
    docs = get_db().conversation.find(
        {"conversation_id": conversation_id, "owner_user_id": {"$in": user_ids}},
        {"owner_user_id": 1, "recv_msg_opt": 1},
    )
    for d in docs:
        opts[d["owner_user_id"]] = int(d.get("recv_msg_opt") or RECV_AND_NOTIFY)
    return opts
