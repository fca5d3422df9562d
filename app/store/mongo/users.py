"""The `user` collection: the profiles this server keeps (nickname, face URL, ex), registered by an
admin through OpenIM's user API; senders' profiles on messages come from here too (P8)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo import UpdateOne

from app.store.mongo.client import get_db, get_quick_db


def find_users(user_ids: list[str]) -> dict[str, dict[str, Any]]:
    """user -> their record, for the ids that have one."""
    return {d["user_id"]: d for d in get_db().user.find({"user_id": {"$in": user_ids}}, {"_id": 0})}


def register_users(profiles: Iterable[tuple[str, dict[str, str]]], now_ms: int) -> None:
    """(user, profile fields) each: fields set, created at `now_ms` if new (a re-registration keeps
    its creation time and global receive option)."""
    ops = [
        UpdateOne(
            {"user_id": user_id},
            {"$set": fields, "$setOnInsert": {"create_time": now_ms, "global_recv_msg_opt": 0}},
            upsert=True,
        )
        for user_id, fields in profiles
    ]
    get_db().user.bulk_write(ops, ordered=False)


def sender_profile(user_id: str) -> dict[str, Any] | None:
    """The user's nickname and face URL, through the client that gives up fast while MongoDB is out."""
    return get_quick_db().user.find_one({"user_id": user_id}, {"_id": 0, "nickname": 1, "face_url": 1})


def global_recv_msg_opts(user_ids: list[str]) -> dict[str, int]:
    """user -> their global receive option (0 for users without a record); a hot-path lookup."""
    opts = dict.fromkeys(user_ids, 0)
    fields = {"_id": 0, "user_id": 1, "global_recv_msg_opt": 1}
    for d in get_quick_db().user.find({"user_id": {"$in": user_ids}}, fields):
        opts[d["user_id"]] = int(d.get("global_recv_msg_opt") or 0)
    return opts


def set_global_recv_msg_opt(user_id: str, opt: int) -> bool:
    """False when the user has no record (OpenIM answers RecordNotFound then)."""
    return get_db().user.update_one({"user_id": user_id}, {"$set": {"global_recv_msg_opt": opt}}).matched_count == 1
