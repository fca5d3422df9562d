"""The `seq_user` collection (OpenIM's model): per user and conversation, `read_seq` (moves forward
only) and the member's bounds `min_seq` / `max_seq` (set on joining and leaving a group)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo import UpdateOne

from app.store.mongo.bulk import upsert_retrying_races
from app.store.mongo.client import get_db


def raise_read_seqs(read_seqs: Iterable[tuple[str, str, int]]) -> None:
    """(conversation, user, seq) each: read_seq only moves forward, min_seq is never reset."""
    ops = [
        UpdateOne(
            {"user_id": user, "conversation_id": conv},
            {"$max": {"read_seq": seq}, "$setOnInsert": {"min_seq": 0, "max_seq": 0}},
            upsert=True,
        )
        for conv, user, seq in read_seqs
    ]
    upsert_retrying_races(get_db().seq_user, ops)


def get_user_seqs(user_id: str, conversation_ids: list[str]) -> dict[str, dict[str, int]]:
    """conversation -> {min_seq, max_seq, read_seq} of this user."""
    if not conversation_ids:
        return {}
    docs = get_db().seq_user.find(
        {"user_id": user_id, "conversation_id": {"$in": conversation_ids}},
        {"conversation_id": 1, "min_seq": 1, "max_seq": 1, "read_seq": 1},
    )
    fields = ("min_seq", "max_seq", "read_seq")
    return {d["conversation_id"]: {f: int(d.get(f, 0)) for f in fields} for d in docs}


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
    upsert_retrying_races(get_db().seq_user, ops)


def raise_min_seqs(user_id: str, seqs: dict[str, int]) -> None:
    """The user cleared these conversations: nothing below `seq` is readable for them (never lowered)."""
    ops = [
        UpdateOne(
            {"user_id": user_id, "conversation_id": conv},
            {"$max": {"min_seq": seq}, "$setOnInsert": {"read_seq": 0, "max_seq": 0}},
            upsert=True,
        )
        for conv, seq in seqs.items()
    ]
    upsert_retrying_races(get_db().seq_user, ops)
