"""Every Redis key and channel name of the project, and how long the keys live.

Per-conversation keys carry the conversation id in a hash tag `{...}` (per-user keys the user id)
so one conversation's keys live in one Redis Cluster slot and can be written in one pipeline or
script. The texts are data: existing deployments hold keys under exactly these names.
"""

from __future__ import annotations

import hashlib

MSG_CACHE_TTL_SECONDS = 24 * 3600
# P2: a clientMsgID keeps its seq for a week, far longer than any broker redelivery or client resend.
CLIENT_MSG_TTL_SECONDS = 7 * 24 * 3600
ONLINE_TTL_SECONDS = 90
# A conversation's cached seq block outlives any pause in its traffic; losing it only costs a jump.
MALLOC_SEQ_TTL_SECONDS = 365 * 24 * 3600
# An unread badge no notification touched for this long starts again from 0.
BADGE_TTL_SECONDS = 30 * 24 * 3600
# Receivers' receive options are cached this long (a change elsewhere deletes them at once).
RECV_OPTS_TTL_SECONDS = 600
# A cached user min seq: refilled from MongoDB after it expires.
USER_MIN_SEQ_TTL_SECONDS = 7 * 24 * 3600
# A server-side send's status answers /msg/check_msg_is_send_success this long (OpenIM's 24 h).
SEND_STATUS_TTL_SECONDS = 24 * 3600
# Getui's auth token is kept this long at most (less when Getui announces an earlier expiry).
GETUI_TOKEN_TTL_SECONDS = 23 * 3600

ONLINE_EVENTS_CHANNEL = "USER_ONLINE_EVENTS"


# --- one conversation's messages and seqs (data Redis) -----------------------------------------


def malloc_seq_key(conversation_id: str) -> str:
    """The seq allocator's cached block (app/seq_lua.py)."""
    return f"MALLOC_SEQ:{{{conversation_id}}}"


def max_seq_key(conversation_id: str) -> str:
    """The visible max seq (P5): raised only after every message up to it is readable."""
    return f"MAX_SEQ:{{{conversation_id}}}"


def msg_cache_key(conversation_id: str, seq: int) -> str:
    return f"MSG_CACHE:{{{conversation_id}}}:{seq}"


def client_msg_key(conversation_id: str) -> str:
    """clientMsgID -> seq, for the conversation's messages of the last CLIENT_MSG_TTL_SECONDS (P2)."""
    return f"CLIENT_MSG:{{{conversation_id}}}"


def user_read_seq_key(conversation_id: str, user_id: str) -> str:
    return f"SEQ_USER_READ:{{{conversation_id}}}:{user_id}"


def user_min_seq_key(conversation_id: str, user_id: str) -> str:
    """The lowest seq this user may read here (moved by clearing the conversation); MongoDB's seq_user
    keeps the same value, and fills this key again when Redis lost it."""
    return f"SEQ_USER_MIN:{{{conversation_id}}}:{user_id}"


def send_status_key(operation_id: str) -> str:
    """A server-side send's outcome by its request's operationID (OpenIM's SEND_MSG_STATUS)."""
    return f"SEND_MSG_STATUS:{operation_id}"


def conversation_ready_key(conversation_id: str) -> str:
    """Set once the conversation's MongoDB records exist, so transfer creates them only once."""
    return f"CONV_READY:{{{conversation_id}}}"


def client_ack_key(conversation_id: str, client_msg_id: str) -> str:
    """The gateway's answer to a clientMsgID (P2: a resend is answered as the first send was)."""
    return f"CLIENT_ACK:{{{conversation_id}}}:{client_msg_id}"


# --- users and gateway nodes (data Redis) ------------------------------------------------------


def online_key(user_id: str) -> str:
    return f"ONLINE:{{{user_id}}}"


def push_channel(node_id: str) -> str:
    """The pub/sub channel one gateway node receives its deliveries and kicks on."""
    return f"PUSH_NODE:{node_id}"


def kicked_token_key(token: str) -> str:
    """Hashed: the key names a token without holding it."""
    return f"KICKED_TOKEN:{hashlib.sha256(token.encode()).hexdigest()}"


def logged_out_key(user_id: str, platform_id: int) -> str:
    return f"LOGGED_OUT:{{{user_id}}}:{platform_id}"


def group_members_key(group_id: str) -> str:
    return f"GROUP_MEMBERS:{{{group_id}}}"


def getui_token_key(app_id: str) -> str:
    """Getui's auth token, shared by every offline worker (OpenIM's GETUI_TOKEN, per app)."""
    return f"GETUI_TOKEN:{app_id}"


def fcm_token_key(user_id: str, platform_id: int) -> str:
    """A device's FCM registration token (OpenIM's FCM_TOKEN:account:platform), hash-tagged by user."""
    return f"FCM_TOKEN:{{{user_id}}}:{platform_id}"


def badge_key(user_id: str) -> str:
    """A user's unread badge: a hash conversation -> messages notified since the last read (OpenIM keeps
    one sum, USER_BADGE_UNREAD_COUNT_SUM:user; per conversation lets a read take its part away)."""
    return f"USER_BADGE_UNREAD_COUNT:{{{user_id}}}"


def recv_opts_key(user_id: str) -> str:
    """A cache of a user's receive options: `g` the global one, and each conversation whose option is
    not 0; the field `loaded` says the hash is complete (MongoDB holds the truth)."""
    return f"RECV_OPTS:{{{user_id}}}"


def transfer_shards_key() -> str:
    """TRANSFER_SHARDS as the first process recorded it; every process compares (app/ops/preflight.py)."""
    return "CONFIG:TRANSFER_SHARDS"


def dead_letters_key(stage: str) -> str:
    """One stream per pipeline stage (app/pipeline/dead_letters.py)."""
    return f"DEAD_LETTERS:{stage}"


# --- the pipeline's plumbing (broker Redis) ----------------------------------------------------


def journal_key(queue: str) -> str:
    """The hand-offs published on `queue` and not yet done (app/pipeline/journal.py)."""
    return f"JOURNAL:{{{queue}}}"


def lease_key(queue: str) -> str:
    """A transfer shard's lease (app/pipeline/shard_lease.py)."""
    return f"LEASE:{{transfer}}:{queue}"  # one hash tag: the all-or-nothing script is single-slot
