"""A cache of users' receive options (MongoDB holds them: `user.global_recv_msg_opt` and each
`conversation.recv_msg_opt`), read by the gateway for every single-chat batch in one round trip.

A user's hash is complete or absent: `loaded` marks a complete one. A change of an option deletes
the hash, so the next batch reloads it from MongoDB; the TTL bounds how long a reload that raced a
change can keep the old value.
"""

from __future__ import annotations

from typing import Any

from redis.typing import EncodableT, FieldT

from app.store.redis.client import get_redis
from app.store.redis.keys import RECV_OPTS_TTL_SECONDS, recv_opts_key

LOADED = "loaded"
GLOBAL = "g"


def queue_cached(pipe: Any, pairs: list[tuple[str, str]]) -> None:
    """Queue the reads of the pairs' options on `pipe` (one reply per pair, read by `parse_cached`):
    the gateway reads them in the same round trip as the batch's clientMsgID reservations."""
    for user_id, conversation_id in pairs:
        pipe.hmget(recv_opts_key(user_id), [LOADED, GLOBAL, conversation_id])


def parse_cached(pairs: list[tuple[str, str]], replies: list[Any]) -> dict[tuple[str, str], tuple[int, int] | None]:
    """(user, conversation) -> (global option, conversation option), or None where the user's hash
    is not cached."""
    out: dict[tuple[str, str], tuple[int, int] | None] = {}
    for pair, (loaded, global_opt, conv_opt) in zip(pairs, replies, strict=True):
        out[pair] = (int(global_opt or 0), int(conv_opt or 0)) if loaded else None
    return out


def fill_many(options: dict[str, tuple[int, dict[str, int]]]) -> None:
    """Cache users' complete options, user -> (global option, {conversation: option}; only the
    conversations whose option is not 0 are kept), in one round trip. Not one transaction: the users'
    hashes are in different slots of a Redis Cluster. A reader between a user's DEL and HSET finds no
    hash and loads from MongoDB; a change's `forget` racing this fill is what the TTL bounds,
    transaction or not."""
    pipe = get_redis().pipeline(transaction=False)
    for user_id, (global_opt, conversation_opts) in options.items():
        mapping: dict[FieldT, EncodableT] = {c: o for c, o in conversation_opts.items() if o}
        mapping[GLOBAL] = global_opt
        mapping[LOADED] = 1
        key = recv_opts_key(user_id)
        pipe.delete(key)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, RECV_OPTS_TTL_SECONDS)
    pipe.execute()


def forget(user_ids: list[str]) -> None:
    """After a change in MongoDB: the next read reloads."""
    if user_ids:
        pipe = get_redis().pipeline(transaction=False)
        for user_id in user_ids:
            pipe.delete(recv_opts_key(user_id))
        pipe.execute()
