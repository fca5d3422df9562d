"""Redis: every key this project uses, and the small scripts that touch them.

Per-conversation keys carry the conversation id in a hash tag `{...}` so one conversation's keys
live in one Redis Cluster slot and can be written in one pipeline or script.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis

from app.config import settings

MSG_CACHE_TTL_SECONDS = 24 * 3600
# P2: a clientMsgID keeps its seq for a week, far longer than any broker redelivery or client resend.
CLIENT_MSG_TTL_SECONDS = 7 * 24 * 3600
ONLINE_TTL_SECONDS = 90

_client: redis.Redis | None = None


def get_redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_timeout=10, health_check_interval=30
        )
    return _client


_broker_client: redis.Redis | None = None


def get_broker_redis() -> redis.Redis:
    """The broker's Redis (when the broker is Redis): shard leases and the transfer journal belong
    with the queues they guard, not with the data."""
    global _broker_client
    if _broker_client is None:
        _broker_client = redis.Redis.from_url(
            settings.effective_broker_url, decode_responses=True, socket_timeout=10, health_check_interval=30
        )
    return _broker_client


def malloc_seq_key(conversation_id: str) -> str:
    return f"MALLOC_SEQ:{{{conversation_id}}}"


def max_seq_key(conversation_id: str) -> str:
    """The visible max seq (P5): raised only after every message up to it is readable."""
    return f"MAX_SEQ:{{{conversation_id}}}"


def msg_cache_key(conversation_id: str, seq: int) -> str:
    return f"MSG_CACHE:{{{conversation_id}}}:{seq}"


def client_msg_key(conversation_id: str) -> str:
    return f"CLIENT_MSG:{{{conversation_id}}}"


def user_read_seq_key(conversation_id: str, user_id: str) -> str:
    return f"SEQ_USER_READ:{{{conversation_id}}}:{user_id}"


def online_key(user_id: str) -> str:
    return f"ONLINE:{{{user_id}}}"


def push_channel(node_id: str) -> str:
    return f"PUSH_NODE:{node_id}"


# KEYS[1] = key, ARGV[1] = value: raise an integer, never lower it.
RAISE_TO_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then
  redis.call('SET', KEYS[1], wanted)
  return wanted
end
return current
"""


def encode_cached(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def decode_cached(raw: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(raw)
    return value


def get_cached_msgs(conversation_id: str, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
    seq_list = list(seqs)
    if not seq_list:
        return {}
    raws = get_redis().mget([msg_cache_key(conversation_id, s) for s in seq_list])
    return {s: decode_cached(str(raw)) for s, raw in zip(seq_list, raws, strict=True) if raw is not None}


def _get_ints(conversation_ids: list[str], keys: list[str]) -> dict[str, int | None]:
    """conversation -> the integer at its key (None where the key is missing), in one MGET."""
    if not conversation_ids:
        return {}
    raws = get_redis().mget(keys)
    return {c: (int(raw) if raw is not None else None) for c, raw in zip(conversation_ids, raws, strict=True)}


def get_visible_max_seqs(conversation_ids: list[str]) -> dict[str, int | None]:
    return _get_ints(conversation_ids, [max_seq_key(c) for c in conversation_ids])


def get_read_seqs(user_id: str, conversation_ids: list[str]) -> dict[str, int | None]:
    return _get_ints(conversation_ids, [user_read_seq_key(c, user_id) for c in conversation_ids])


def raise_visible_max_seq(conversation_id: str, seq: int) -> int:
    result = get_redis().eval(RAISE_TO_SCRIPT, 1, max_seq_key(conversation_id), seq)
    return int(result)


def get_online_platforms(user_ids: list[str]) -> dict[str, dict[int, str]]:
    """user -> {platformID: gateway node id} for every user with a live connection."""
    pipe = get_redis().pipeline(transaction=False)
    for user_id in user_ids:
        pipe.hgetall(online_key(user_id))
    out: dict[str, dict[int, str]] = {}
    for user_id, entries in zip(user_ids, pipe.execute(), strict=True):
        if entries:
            out[user_id] = {int(p): node for p, node in entries.items()}
    return out


def set_online(user_id: str, platform_id: int, node_id: str) -> None:
    pipe = get_redis().pipeline(transaction=False)
    pipe.hset(online_key(user_id), str(platform_id), node_id)
    pipe.expire(online_key(user_id), ONLINE_TTL_SECONDS)
    pipe.execute()


# Remove a platform's entry only if this node still owns it (a newer login elsewhere keeps it).
CLEAR_ONLINE_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def clear_online(user_id: str, platform_id: int, node_id: str) -> None:
    get_redis().eval(CLEAR_ONLINE_SCRIPT, 1, online_key(user_id), str(platform_id), node_id)


def publish_to_node(node_id: str, payload: dict[str, Any]) -> int:
    return int(get_redis().publish(push_channel(node_id), json.dumps(payload, separators=(",", ":"))))


def conversation_ready_key(conversation_id: str) -> str:
    """Set once the conversation's MongoDB records exist, so transfer creates them only once."""
    return f"CONV_READY:{{{conversation_id}}}"


# KEYS[1] = read seq key, KEYS[2] = visible max key, ARGV[1] = wanted: raise, never past the max.
RAISE_CAPPED_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(redis.call('GET', KEYS[2]) or '0')
local wanted = math.min(tonumber(ARGV[1]), limit)
if wanted > current then
  redis.call('SET', KEYS[1], wanted)
  return wanted
end
return current
"""


def client_ack_key(conversation_id: str, client_msg_id: str) -> str:
    """The gateway's answer to a clientMsgID (P2: a resend is answered as the first send was)."""
    return f"CLIENT_ACK:{{{conversation_id}}}:{client_msg_id}"


def reserve_client_acks(entries: list[tuple[str, str, str]]) -> list[str | None]:
    """(conversation, clientMsgID, pending answer) -> None where reserved now, else the value already there."""
    pipe = get_redis().pipeline(transaction=False)
    for conv, cid, value in entries:
        pipe.set(client_ack_key(conv, cid), value, nx=True, ex=CLIENT_MSG_TTL_SECONDS)
        pipe.get(client_ack_key(conv, cid))
    replies = pipe.execute()
    out: list[str | None] = []
    for i in range(len(entries)):
        reserved, current = replies[2 * i], replies[2 * i + 1]
        out.append(None if reserved else (None if current is None else str(current)))
    return out


def settle_client_acks(confirmed: list[tuple[str, str, str]], released: list[tuple[str, str]]) -> None:
    """Mark published answers final; drop reservations whose publish failed so a resend can retry."""
    pipe = get_redis().pipeline(transaction=False)
    for conv, cid, value in confirmed:
        pipe.set(client_ack_key(conv, cid), value, ex=CLIENT_MSG_TTL_SECONDS)
    for conv, cid in released:
        pipe.delete(client_ack_key(conv, cid))
    pipe.execute()


# --- transfer journal (Redis broker only) ----------------------------------------------------
# kombu's Redis transport pops a message (BRPOP) before it records it as unacknowledged; a worker
# killed in between loses it. So each published batch is also journaled until transfer handed it
# off, and a transfer worker taking over a shard replays what is left (transfer dedupes, P2).
JOURNAL_MAX_ENTRIES = 100_000


def journal_key(queue: str) -> str:
    return f"TRANSFER_JOURNAL:{{{queue}}}"


def journal_append(queue: str, docs: list[dict[str, Any]]) -> str:
    entry_id = get_broker_redis().xadd(
        journal_key(queue),
        {"msgs": json.dumps(docs, separators=(",", ":"))},
        maxlen=JOURNAL_MAX_ENTRIES,
        approximate=True,
    )
    return str(entry_id)


def journal_remove(queue: str, entry_id: str) -> None:
    get_broker_redis().xdel(journal_key(queue), entry_id)


def journal_entries(queue: str, count: int = 500) -> list[tuple[str, list[dict[str, Any]]]]:
    """The oldest `count` journaled batches of `queue`, in publish order."""
    rows: list[tuple[str, dict[str, str]]] = get_broker_redis().xrange(journal_key(queue), count=count) or []  # type: ignore[assignment]
    return [(str(entry_id), json.loads(fields["msgs"])) for entry_id, fields in rows]


# One conversation's commit, atomically (P5: the max seq never becomes visible before its messages).
# KEYS: visible max, clientMsgID hash, conversation-ready marker, n message cache keys, m read-seq keys
# ARGV: n, cache ttl, record ttl, new max seq, n message JSONs, n clientMsgIDs, n seqs, m read seqs
COMMIT_SCRIPT = """
local n = tonumber(ARGV[1])
local function raise(key, value)
  local current = tonumber(redis.call('GET', key) or '0')
  if tonumber(value) > current then redis.call('SET', key, value) end
end
for i = 1, n do
  redis.call('SET', KEYS[3 + i], ARGV[4 + i], 'EX', ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[4 + n + i], ARGV[4 + 2 * n + i])
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
raise(KEYS[1], ARGV[4])
for j = 1, #KEYS - 3 - n do
  raise(KEYS[3 + n + j], ARGV[4 + 3 * n + j])
end
redis.call('SET', KEYS[3], 1, 'EX', ARGV[3])
return n
"""


def commit_args(
    conversation_id: str, msgs: list[dict[str, Any]], read_seqs: dict[str, int]
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of COMMIT_SCRIPT for one conversation's messages (already given their seqs)."""
    keys = [max_seq_key(conversation_id), client_msg_key(conversation_id), conversation_ready_key(conversation_id)]
    keys += [msg_cache_key(conversation_id, m["seq"]) for m in msgs]
    keys += [user_read_seq_key(conversation_id, user) for user in read_seqs]
    args: list[str | int] = [len(msgs), MSG_CACHE_TTL_SECONDS, CLIENT_MSG_TTL_SECONDS, max(m["seq"] for m in msgs)]
    args += [encode_cached(m) for m in msgs]
    args += [m["client_msg_id"] for m in msgs]
    args += [m["seq"] for m in msgs]
    args += list(read_seqs.values())
    return keys, args
