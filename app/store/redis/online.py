"""Who is online where: each user's platforms per gateway node, the online-change events, and the
channel each gateway node receives its deliveries on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from app.core import compact_json
from app.store.redis import lean
from app.store.redis.client import get_redis
from app.store.redis.keys import ONLINE_EVENTS_CHANNEL, ONLINE_TTL_SECONDS, online_key, push_channel


class OnlineEntry(NamedTuple):
    platform_id: int
    node_id: str
    background: bool


def _online_field(platform_id: int, node_id: str) -> str:
    return f"{platform_id}:{node_id}"


def get_online(user_ids: list[str]) -> dict[str, list[OnlineEntry]]:
    """user -> the platforms it has connected, on which gateway node, for every user online.

    Each field carries its own expiry, so the entries of a gateway node that died stop counting
    after ONLINE_TTL_SECONDS even while another node keeps renewing the same user's key."""
    pipe = lean.pipeline(get_redis())
    for user_id in user_ids:
        pipe.hgetall(online_key(user_id))
    now_ms = int(time.time() * 1000)
    out: dict[str, list[OnlineEntry]] = {}
    for user_id, fields in zip(user_ids, pipe.execute(), strict=True):
        entries = [entry for field, value in fields.items() if (entry := _parse_online(field, value, now_ms))]
        if entries:
            out[user_id] = entries
    return out


def _parse_online(field: str, value: str, now_ms: int) -> OnlineEntry | None:
    platform, _, node = field.partition(":")
    expires, _, flag = value.partition(":")
    if not platform.isdigit() or not expires.isdigit() or int(expires) < now_ms:
        return None
    return OnlineEntry(int(platform), node, flag == "bg")


def online_platform_ids(user_id: str) -> list[int]:
    return sorted({entry.platform_id for entry in get_online([user_id]).get(user_id, [])})


def set_online(user_id: str, platform_id: int, node_id: str, background: bool = False) -> None:
    set_online_many([(user_id, platform_id, background)], node_id)


def set_online_many(entries: Iterable[tuple[str, int, bool]], node_id: str) -> None:
    """This node's entries (user, platform, background) in one round trip (a pipeline of two
    commands each; in Redis Cluster redis-py splits it by slot)."""
    expires = int(time.time() * 1000) + ONLINE_TTL_SECONDS * 1000
    pipe = get_redis().pipeline(transaction=False)
    for user_id, platform_id, background in entries:
        key = online_key(user_id)
        pipe.hset(key, _online_field(platform_id, node_id), f"{expires}:bg" if background else str(expires))
        pipe.expire(key, ONLINE_TTL_SECONDS)
    pipe.execute()


def clear_online_many(entries: Iterable[tuple[str, int]], node_id: str) -> None:
    pipe = get_redis().pipeline(transaction=False)
    for user_id, platform_id in entries:
        pipe.hdel(online_key(user_id), _online_field(platform_id, node_id))
    pipe.execute()


def clear_online(user_id: str, platform_id: int, node_id: str) -> None:
    clear_online_many([(user_id, platform_id)], node_id)


def publish_online_change(user_id: str) -> None:
    """Tell every gateway node (for 2005 subscribers) which platforms the user has online now."""
    body = {"userID": user_id, "platformIDs": online_platform_ids(user_id)}
    get_redis().publish(ONLINE_EVENTS_CHANNEL, json.dumps(body, separators=(",", ":")))


def publish_to_node(node_id: str, payload: dict[str, Any]) -> int:
    """Send one gateway node its deliveries or kicks; returns how many subscribers received it."""
    return int(get_redis().publish(push_channel(node_id), compact_json.dumps(payload)))
