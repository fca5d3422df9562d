"""Redis: every key this project uses, and the small scripts that touch them.

Per-conversation keys carry the conversation id in a hash tag `{...}` so one conversation's keys
live in one Redis Cluster slot and can be written in one pipeline or script.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import redis

from app.config import settings

MSG_CACHE_TTL_SECONDS = 24 * 3600
# P2: a clientMsgID keeps its seq for a week, far longer than any broker redelivery or client resend.
CLIENT_MSG_TTL_SECONDS = 7 * 24 * 3600
ONLINE_TTL_SECONDS = 90

_client: redis.Redis | None = None


def _connect(url: str) -> redis.Redis:
    """A blocking pool: thousands of gateway greenlets wait their turn for one of
    REDIS_MAX_CONNECTIONS connections instead of failing with MaxConnectionsError."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=20,
        decode_responses=True,
        socket_timeout=10,
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


def get_redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = _connect(settings.redis_url)
    return _client


_broker_client: redis.Redis | None = None


def get_broker_redis() -> redis.Redis:
    """The broker's Redis (when the broker is Redis): shard leases and the transfer journal belong
    with the queues they guard, not with the data."""
    global _broker_client
    if _broker_client is None:
        _broker_client = _connect(settings.effective_broker_url)
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
    pipe = get_redis().pipeline(transaction=False)
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
    expires = int(time.time() * 1000) + ONLINE_TTL_SECONDS * 1000
    pipe = get_redis().pipeline(transaction=False)
    pipe.hset(online_key(user_id), _online_field(platform_id, node_id), f"{expires}:bg" if background else str(expires))
    pipe.expire(online_key(user_id), ONLINE_TTL_SECONDS)
    pipe.execute()


def clear_online(user_id: str, platform_id: int, node_id: str) -> None:
    get_redis().hdel(online_key(user_id), _online_field(platform_id, node_id))


ONLINE_EVENTS_CHANNEL = "USER_ONLINE_EVENTS"


def publish_online_change(user_id: str) -> None:
    """Tell every gateway node (for 2005 subscribers) which platforms the user has online now."""
    body = {"userID": user_id, "platformIDs": online_platform_ids(user_id)}
    get_redis().publish(ONLINE_EVENTS_CHANNEL, json.dumps(body, separators=(",", ":")))


def _kicked_token_key(token: str) -> str:
    return f"KICKED_TOKEN:{hashlib.sha256(token.encode()).hexdigest()}"


def mark_token_kicked(token: str, ttl_seconds: int) -> None:
    """A kicked or logged-out (2003) token is refused (1506) until it would have expired anyway."""
    get_redis().set(_kicked_token_key(token), 1, ex=max(1, ttl_seconds))


def _logged_out_key(user_id: str, platform_id: int) -> str:
    return f"LOGGED_OUT:{{{user_id}}}:{platform_id}"


def force_logout(user_id: str, platform_id: int, ttl_seconds: int) -> None:
    """Every token of this user and platform issued before now stops working (admin force_logout);
    to the millisecond, as tokens' `iat`, so a token minted a moment before is revoked too."""
    get_redis().set(_logged_out_key(user_id, platform_id), f"{time.time():.3f}", ex=max(1, ttl_seconds))


def token_refused(token: str, user_id: str, platform_id: int, issued_at: float) -> bool:
    """Kicked by a newer login, logged out, or issued before a force_logout of its user and platform."""
    kicked, logged_out_at = get_redis().mget(_kicked_token_key(token), _logged_out_key(user_id, platform_id))
    return kicked is not None or (logged_out_at is not None and issued_at < float(logged_out_at))


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
    return f"JOURNAL:{{{queue}}}"


def journal_append(queue: str, payload: Any) -> str:
    """Journal one hand-off (any JSON: a transfer batch's messages, a task's arguments)."""
    entry_id = get_broker_redis().xadd(
        journal_key(queue),
        {"msgs": json.dumps(payload, separators=(",", ":"))},
        maxlen=JOURNAL_MAX_ENTRIES,
        approximate=True,
    )
    return str(entry_id)


def journal_remove(queue: str, entry_id: str) -> None:
    get_broker_redis().xdel(journal_key(queue), entry_id)


def journal_last_id(queue: str) -> str | None:
    rows = get_broker_redis().xrevrange(journal_key(queue), count=1)
    return str(rows[0][0]) if rows else None


def journal_entries(queue: str, count: int = 500, until: str = "+") -> list[tuple[str, Any]]:
    """The oldest `count` journaled hand-offs of `queue` up to entry id (or ms time) `until`, in order."""
    rows: list[tuple[str, dict[str, str]]] = get_broker_redis().xrange(journal_key(queue), max=until, count=count) or []  # type: ignore[assignment]
    return [(str(entry_id), json.loads(fields["msgs"])) for entry_id, fields in rows]


# One conversation's commit, atomically (P5: the max seq never becomes visible before its messages).
# KEYS: visible max, clientMsgID hash, conversation-ready marker, n message cache keys, m read-seq keys
# ARGV: n, cache ttl, record ttl, new max seq, n message JSONs, n clientMsgIDs, n seqs, m read seqs
# Returns n, or COMMIT_REFUSED without writing anything when one of the clientMsgIDs got a seq since
# the caller probed (another worker committed the same batch meanwhile): P2 holds even then.
COMMIT_REFUSED = -1
COMMIT_SCRIPT = """
local n = tonumber(ARGV[1])
local function raise(key, value)
  local current = tonumber(redis.call('GET', key) or '0')
  if tonumber(value) > current then redis.call('SET', key, value) end
end
for i = 1, n do
  if redis.call('HEXISTS', KEYS[2], ARGV[4 + n + i]) == 1 then return -1 end
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


# --- group members: kept in step with MongoDB's group_member by app/services/groups.py ----------------


def group_members_key(group_id: str) -> str:
    return f"GROUP_MEMBERS:{{{group_id}}}"


# KEYS[1] = members set; ARGV = member ids, the first being a sentinel so an empty group still exists.
FILL_MEMBERS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SADD', KEYS[1], unpack(ARGV))
return 1
"""
MEMBERS_SENTINEL = "\x00"


def get_group_members(group_id: str) -> set[str] | None:
    """The members, or None when Redis does not hold the group (rebuild it from MongoDB)."""
    found = get_redis().smembers(group_members_key(group_id))
    if not found:
        return None
    return {str(m) for m in found} - {MEMBERS_SENTINEL}


def fill_group_members(group_id: str, members: Iterable[str]) -> None:
    """Rebuild after Redis lost the set; never overwrites a set that changes wrote meanwhile."""
    get_redis().eval(FILL_MEMBERS_SCRIPT, 1, group_members_key(group_id), MEMBERS_SENTINEL, *members)


# KEYS[1] = members set; ARGV[1] = how many adds follow, then the added ids, then the removed ids.
# A missing set stays missing: the next reader rebuilds it from MongoDB, which changed first.
CHANGE_MEMBERS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local adds = tonumber(ARGV[1])
for i = 2, adds + 1 do redis.call('SADD', KEYS[1], ARGV[i]) end
for i = adds + 2, #ARGV do redis.call('SREM', KEYS[1], ARGV[i]) end
return 1
"""


def change_group_members(group_id: str, added: Iterable[str] = (), removed: Iterable[str] = ()) -> None:
    adds, drops = list(added), list(removed)
    get_redis().eval(CHANGE_MEMBERS_SCRIPT, 1, group_members_key(group_id), len(adds), *adds, *drops)


def is_group_member(group_id: str, user_id: str) -> bool | None:
    """None when Redis does not hold the group."""
    pipe = get_redis().pipeline(transaction=False)
    pipe.exists(group_members_key(group_id))
    pipe.sismember(group_members_key(group_id), user_id)
    exists, member = pipe.execute()
    return bool(member) if exists else None


# --- offline push providers --------------------------------------------------------------------


def getui_token_key(app_id: str) -> str:
    """Getui's auth token, shared by every offline worker (OpenIM's GETUI_TOKEN, per app)."""
    return f"GETUI_TOKEN:{app_id}"


def fcm_token_key(user_id: str, platform_id: int) -> str:
    """A device's FCM registration token (OpenIM's FCM_TOKEN:account:platform), hash-tagged by user."""
    return f"FCM_TOKEN:{{{user_id}}}:{platform_id}"


def set_fcm_token(user_id: str, platform_id: int, token: str, ttl_seconds: int) -> None:
    """ttl_seconds 0 keeps the token until the client replaces it (as OpenIM does)."""
    get_redis().set(fcm_token_key(user_id, platform_id), token, ex=ttl_seconds or None)


def get_fcm_tokens(user_ids: list[str], platform_ids: Iterable[int]) -> dict[str, dict[int, str]]:
    """user -> {platform: FCM token} for the users that registered any, in one round trip."""
    pairs = [(u, p) for u in user_ids for p in platform_ids]
    pipe = get_redis().pipeline(transaction=False)
    for user_id, platform_id in pairs:
        pipe.get(fcm_token_key(user_id, platform_id))
    out: dict[str, dict[int, str]] = {}
    for (user_id, platform_id), token in zip(pairs, pipe.execute(), strict=True):
        if token:
            out.setdefault(user_id, {})[platform_id] = str(token)
    return out


def delete_fcm_token(user_id: str, platform_id: int, token: str) -> None:
    """Forget a token FCM no longer knows, unless the client registered a new one meanwhile."""
    get_redis().eval(DELETE_IF_EQUAL_SCRIPT, 1, fcm_token_key(user_id, platform_id), token)


DELETE_IF_EQUAL_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
