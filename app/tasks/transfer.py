"""Transfer stage (OpenIM's msgtransfer): give each message its seq, cache it, hand off.

One task per batch published by a gateway for one shard. A shard queue has one consumer, and a batch
is handled in order, conversation by conversation, so seq order is the gateway's acceptance order.
Infrastructure outages are waited out inside the task (never a Celery retry to the back of the
queue, which would reorder the conversation).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

from app import cache, storage
from app.backoff import until_done
from app.celery_app import celery_app
from app.conversation import GROUP_CHAT, conversation_id_for
from app.protocol import MSG_STATUS_SUCCESS
from app.seq_lua import SeqAllocator

log = logging.getLogger(__name__)

Committed = dict[str, list[dict[str, Any]]]
"""conversation id -> its messages of this batch, in seq order."""

DEAD_LETTER_KEY = "DEAD_LETTER:transfer"

_allocator: SeqAllocator | None = None


def allocator() -> SeqAllocator:
    global _allocator
    if _allocator is None:
        _allocator = SeqAllocator(cache.get_redis(), storage.take_seq_block)
    return _allocator


def group_by_conversation(msgs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Split a batch per conversation, keeping each conversation's acceptance order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for msg in msgs:
        conv = conversation_id_for(msg["session_type"], msg["send_id"], msg["recv_id"], msg["group_id"])
        grouped.setdefault(conv, []).append(msg)
    return grouped


def conversation_owners(msg: dict[str, Any]) -> list[str]:
    return sorted({msg["send_id"], msg["recv_id"]} - {""})


def commit_conversation(conv: str, msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Allocate seqs and make the messages readable in the cache; returns them in seq order.

    A clientMsgID that already has a seq in this conversation (broker redelivery, client resend)
    keeps it (P2): it is neither allocated again nor written again.
    """
    r = cache.get_redis()
    cids = [m["client_msg_id"] for m in msgs]
    probe = r.pipeline(transaction=False)
    probe.hmget(cache.client_msg_key(conv), cids)
    probe.exists(cache.conversation_ready_key(conv))
    known_raw, conv_ready = probe.execute()

    fresh: list[dict[str, Any]] = []
    repeated: dict[int, dict[str, Any]] = {}
    seen: set[str] = set()
    for msg, known in zip(msgs, known_raw, strict=True):
        cid = msg["client_msg_id"]
        if known is not None:
            repeated[int(known)] = msg
        elif cid in seen:
            continue  # the same clientMsgID twice in one batch: the first one wins
        else:
            seen.add(cid)
            fresh.append(msg)

    if not conv_ready:
        storage.create_conversations(conv, conversation_owners(msgs[0]), {"conversation_type": msgs[0]["session_type"]})

    out: list[dict[str, Any]] = []
    if fresh:
        group = msgs[0]["session_type"] == GROUP_CHAT
        start = allocator().malloc(conv, len(fresh), group=group)
        read_seqs: dict[str, int] = {}
        write = r.pipeline(transaction=True)
        for i, msg in enumerate(fresh):
            seq = start + i + 1
            msg["seq"] = seq
            msg["status"] = MSG_STATUS_SUCCESS
            read_seqs[msg["send_id"]] = seq
            write.set(cache.msg_cache_key(conv, seq), cache.encode_cached(msg), ex=cache.MSG_CACHE_TTL_SECONDS)
        write.hset(cache.client_msg_key(conv), mapping={m["client_msg_id"]: m["seq"] for m in fresh})
        write.expire(cache.client_msg_key(conv), cache.CLIENT_MSG_TTL_SECONDS)
        # Same transaction as the cache writes: the max is never visible before its messages (P5).
        write.eval(cache.RAISE_TO_SCRIPT, 1, cache.max_seq_key(conv), start + len(fresh))
        for user_id, seq in read_seqs.items():
            write.eval(cache.RAISE_TO_SCRIPT, 1, cache.user_read_seq_key(conv, user_id), seq)
        write.set(cache.conversation_ready_key(conv), 1, ex=cache.CLIENT_MSG_TTL_SECONDS)
        write.execute()
        out.extend(fresh)

    if repeated:
        cached = cache.get_cached_msgs(conv, repeated.keys())
        # Re-hand-off what we still hold (a redelivery may have crashed before its hand-off);
        # older repeats were persisted long ago.
        out.extend(cached[s] for s in sorted(cached))
    out.sort(key=lambda m: m["seq"])
    return out


@celery_app.task(name="transfer.batch", acks_late=True)
def transfer_batch(msgs: list[dict[str, Any]]) -> int:
    try:
        committed: Committed = {}
        for conv, conv_msgs in group_by_conversation(msgs).items():
            committed[conv] = until_done(partial(commit_conversation, conv, conv_msgs), f"commit {conv}")
        committed = {c: m for c, m in committed.items() if m}
        if committed:
            until_done(partial(hand_off, committed), "hand off to persist and push")
        return sum(len(m) for m in committed.values())
    except Exception:
        # A bug, not an outage: keep the batch for an operator rather than block the shard forever.
        log.exception("transfer batch failed; stored in %s", DEAD_LETTER_KEY)
        cache.get_redis().rpush(DEAD_LETTER_KEY, json.dumps(msgs))
        raise


def hand_off(committed: Committed) -> None:
    from app.tasks.persist import persist_batch
    from app.tasks.push import push_batch

    persist_batch.apply_async(args=[committed])
    push_batch.apply_async(args=[committed])
