"""The `group` and `group_member` collections (OpenIM's models): a group's record and status, and
one record per member with their role level and join time."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.errors import DuplicateKeyError

from app.store.mongo.bulk import create_once
from app.store.mongo.client import get_db

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
    create_once(get_db().group_member, ops)


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


def member_roles(group_id: str, user_ids: list[str]) -> dict[str, int]:
    """user -> role level, for those of `user_ids` who are members."""
    docs = get_db().group_member.find(
        {"group_id": group_id, "user_id": {"$in": user_ids}}, {"user_id": 1, "role_level": 1}
    )
    return {d["user_id"]: int(d.get("role_level", ROLE_MEMBER)) for d in docs}


def groups_of(user_id: str) -> list[str]:
    """The user's groups, the newest joined first."""
    docs = get_db().group_member.find({"user_id": user_id}, {"group_id": 1, "join_time": 1})
    return [d["group_id"] for d in sorted(docs, key=lambda d: (-int(d.get("join_time", 0)), d["group_id"]))]
