"""Group member sets: a cache of MongoDB's group_member, kept in step by app/services/groups.py."""

from __future__ import annotations

from collections.abc import Iterable

from app.store.redis import scripts
from app.store.redis.client import get_redis
from app.store.redis.keys import group_members_key

# Always in a filled set, so a group without members still exists in Redis.
MEMBERS_SENTINEL = "\x00"


def get_group_members(group_id: str) -> set[str] | None:
    """The members, or None when Redis does not hold the group (rebuild it from MongoDB)."""
    found = get_redis().smembers(group_members_key(group_id))
    if not found:
        return None
    return {str(m) for m in found} - {MEMBERS_SENTINEL}


def fill_group_members(group_id: str, members: Iterable[str]) -> None:
    """Rebuild after Redis lost the set; never overwrites a set that changes wrote meanwhile."""
    fill = scripts.load("fill_members", get_redis())
    fill(keys=[group_members_key(group_id)], args=[MEMBERS_SENTINEL, *members])


def change_group_members(group_id: str, added: Iterable[str] = (), removed: Iterable[str] = ()) -> None:
    adds, drops = list(added), list(removed)
    change = scripts.load("change_members", get_redis())
    change(keys=[group_members_key(group_id)], args=[len(adds), *adds, *drops])


def is_group_member(group_id: str, user_id: str) -> bool | None:
    """None when Redis does not hold the group."""
    pipe = get_redis().pipeline(transaction=False)
    pipe.exists(group_members_key(group_id))
    pipe.sismember(group_members_key(group_id), user_id)
    exists, member = pipe.execute()
    return bool(member) if exists else None
