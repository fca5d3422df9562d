"""The message cache and the seqs readers see: cached messages, visible max seqs, read seqs, and
the commit that makes one conversation's new messages readable at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis
from redis.client import Pipeline

from app.core import compact_json
from app.store.redis import scripts
from app.store.redis.client import get_redis, mget
from app.store.redis.keys import (
    CLIENT_MSG_TTL_SECONDS,
    MSG_CACHE_TTL_SECONDS,
    USER_MIN_SEQ_TTL_SECONDS,
    client_msg_key,
    conversation_ready_key,
    max_seq_key,
    msg_cache_key,
    user_min_seq_key,
    user_read_seq_key,
)

# commit.lua's answer when one of the clientMsgIDs got a seq since the caller probed.
COMMIT_REFUSED = -1


def encode_cached(doc: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON by orjson (the standard library where orjson refuses): every committed
    message is encoded here once (a few percent of a transfer worker with the standard library)."""
    return compact_json.dumps(doc)


def decode_cached(raw: str | bytes) -> dict[str, Any]:
    value: dict[str, Any] = compact_json.loads(raw)
    return value


def get_cached_msgs(conversation_id: str, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
    seq_list = list(seqs)
    if not seq_list:
        return {}
    raws = get_redis().mget([msg_cache_key(conversation_id, s) for s in seq_list])
    return {s: decode_cached(str(raw)) for s, raw in zip(seq_list, raws, strict=True) if raw is not None}


def _get_ints(conversation_ids: list[str], keys: list[str]) -> dict[str, int | None]:
    """conversation -> the integer at its key (None where the key is missing), in one MGET (one per
    slot on a Redis Cluster: the keys are different conversations')."""
    if not conversation_ids:
        return {}
    raws = mget(keys)
    return {c: (int(raw) if raw is not None else None) for c, raw in zip(conversation_ids, raws, strict=True)}


def get_visible_max_seqs(conversation_ids: list[str]) -> dict[str, int | None]:
    return _get_ints(conversation_ids, [max_seq_key(c) for c in conversation_ids])


def get_read_seqs(user_id: str, conversation_ids: list[str]) -> dict[str, int | None]:
    return _get_ints(conversation_ids, [user_read_seq_key(c, user_id) for c in conversation_ids])


def raise_visible_max_seq(conversation_id: str, seq: int) -> int:
    result = scripts.load("raise_to", get_redis())(keys=[max_seq_key(conversation_id)], args=[seq])
    return int(result)


def raise_read_seq(conversation_id: str, user_id: str, seq: int, pipe: Pipeline | None = None) -> Any:
    """Move the user's read seq up to `seq`, never back, never past the visible max: the read seq
    it holds now, or, queued on `pipe`, the pipeline (the read seq is then its reply)."""
    raise_capped = scripts.load("raise_capped", get_redis())
    return raise_capped(keys=read_seq_keys(conversation_id, user_id), args=[seq], client=pipe)


def read_seq_keys(conversation_id: str, user_id: str) -> list[str]:
    """KEYS of raise_capped.lua: the user's read seq and the visible max it is capped by."""
    return [user_read_seq_key(conversation_id, user_id), max_seq_key(conversation_id)]


def commit_args(
    conversation_id: str, msgs: list[dict[str, Any]], read_seqs: dict[str, int]
) -> tuple[list[str], list[str | int | bytes]]:
    """KEYS and ARGV of commit.lua for one conversation's messages (already given their seqs)."""
    keys = [max_seq_key(conversation_id), client_msg_key(conversation_id), conversation_ready_key(conversation_id)]
    keys += [msg_cache_key(conversation_id, m["seq"]) for m in msgs]
    keys += [user_read_seq_key(conversation_id, user) for user in read_seqs]
    args: list[str | int | bytes] = [
        len(msgs),
        MSG_CACHE_TTL_SECONDS,
        CLIENT_MSG_TTL_SECONDS,
        max(m["seq"] for m in msgs),
    ]
    args += [encode_cached(m) for m in msgs]
    args += [m["client_msg_id"] for m in msgs]
    args += [m["seq"] for m in msgs]
    args += list(read_seqs.values())
    return keys, args


def commit(
    conversation_id: str,
    msgs: list[dict[str, Any]],
    read_seqs: dict[str, int],
    client: redis.Redis | scripts.ScriptPipeline | None = None,
) -> Any:
    """Cache the messages, record their clientMsgIDs, raise the visible max and the read seqs, in one
    script (P5): len(msgs), or COMMIT_REFUSED having written nothing; queued on a pipeline, its reply."""
    keys, args = commit_args(conversation_id, msgs, read_seqs)
    return scripts.call(scripts.load("commit", get_redis()), keys, args, client)


def update_cached_msg(
    conversation_id: str, seq: int, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any] | None:
    """Replace a cached message by `change(message)`, keeping its TTL; an optimistic transaction
    (WATCH), so two operations on one message (a revoke and a delete) never lose each other's mark.
    Returns the new message, or None when it is not cached (then MongoDB alone holds it)."""
    key = msg_cache_key(conversation_id, seq)
    with get_redis().pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    pipe.unwatch()
                    return None
                new = change(decode_cached(str(raw)))
                pipe.multi()
                pipe.set(key, encode_cached(new), keepttl=True)
                pipe.execute()
                return new
            except redis.WatchError:
                continue


def delete_cached_msgs(conversation_id: str, seqs: Iterable[int]) -> None:
    keys = [msg_cache_key(conversation_id, s) for s in seqs]
    if keys:
        get_redis().delete(*keys)


def get_user_min_seqs(user_id: str, conversation_ids: list[str]) -> dict[str, int | None]:
    return _get_ints(conversation_ids, [user_min_seq_key(c, user_id) for c in conversation_ids])


def fill_user_min_seqs(user_id: str, seqs: dict[str, int]) -> None:
    """Put back min seqs Redis lost (read from MongoDB), 0 included, without lowering one a clear
    raised meanwhile (SET NX)."""
    if not seqs:
        return
    pipe = get_redis().pipeline(transaction=False)
    for conv, seq in seqs.items():
        pipe.set(user_min_seq_key(conv, user_id), seq, nx=True, ex=USER_MIN_SEQ_TTL_SECONDS)
    pipe.execute()


def raise_user_min_seqs(user_id: str, seqs: dict[str, int]) -> None:
    """Raise (never lower) the user's min seq per conversation, and keep each key a while."""
    if not seqs:
        return
    r = get_redis()
    raise_to = scripts.load("raise_to", r)
    pipe = r.pipeline(transaction=False)
    for conv, seq in seqs.items():
        raise_to(keys=[user_min_seq_key(conv, user_id)], args=[seq], client=pipe)
        pipe.expire(user_min_seq_key(conv, user_id), USER_MIN_SEQ_TTL_SECONDS)
    pipe.execute()
