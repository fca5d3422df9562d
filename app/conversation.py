"""Pure conversation math: ids, shard choice, MongoDB document ids and slots (OpenIM's layout)."""

from __future__ import annotations

import zlib

# OpenIM session types.
SINGLE_CHAT = 1
GROUP_CHAT = 3
NOTIFICATION_CHAT = 4

MSGS_PER_DOC = 100


def single_conversation_id(user_a: str, user_b: str) -> str:
    """`si_<a>_<b>` with the two user ids sorted, as OpenIM's GenConversationIDForSingle."""
    low, high = sorted((user_a, user_b))
    return f"si_{low}_{high}"


def group_conversation_id(group_id: str) -> str:
    return f"sg_{group_id}"


def conversation_id_for(session_type: int, send_id: str, recv_id: str, group_id: str) -> str:
    if session_type == SINGLE_CHAT:
        return single_conversation_id(send_id, recv_id)
    if session_type == GROUP_CHAT:
        return group_conversation_id(group_id)
    if session_type == NOTIFICATION_CHAT:
        low, high = sorted((send_id, recv_id))
        return f"sn_{low}_{high}"
    raise ValueError(f"unsupported session type {session_type}")


def is_group_conversation(conversation_id: str) -> bool:
    return conversation_id.startswith("sg_")


def shard_of(conversation_id: str, shards: int) -> int:
    """Stable across processes and restarts (crc32, never Python's salted hash())."""
    return zlib.crc32(conversation_id.encode("utf-8")) % shards


def transfer_queue(shard: int) -> str:
    return f"transfer.{shard}"


def doc_index(seq: int) -> int:
    return (seq - 1) // MSGS_PER_DOC


def doc_slot(seq: int) -> int:
    return (seq - 1) % MSGS_PER_DOC


def doc_id(conversation_id: str, seq: int) -> str:
    return f"{conversation_id}:{doc_index(seq)}"
