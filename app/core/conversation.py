"""Pure conversation math: ids, shard choice, MongoDB document ids and slots (OpenIM's layout)."""

from __future__ import annotations

import functools
import re
import zlib

from app.core.constants import GROUP_CHAT, NOTIFICATION_CHAT, SINGLE_CHAT
from app.core.validation import check_group_id, check_user_id

MSGS_PER_DOC = 100


def single_conversation_id(user_a: str, user_b: str) -> str:
    """`si_<a>_<b>` with the two user ids sorted, as OpenIM's GenConversationIDForSingle."""
    low, high = sorted((user_a, user_b))
    return f"si_{low}_{high}"


def group_conversation_id(group_id: str) -> str:
    return f"sg_{group_id}"


# Every stage asks this once or twice per message of the same few thousand live conversations:
# remembered, a repeat costs a dict lookup instead of two regular expressions. A refusal raises and
# is never remembered.
@functools.lru_cache(maxsize=1 << 16)
def conversation_id_for(session_type: int, send_id: str, recv_id: str, group_id: str) -> str:
    """The message's conversation; ids that would not read back as themselves are refused
    (ImError ARGS_ERROR): the gateway checked them, transfer recomputes this from the broker's copy."""
    if session_type == SINGLE_CHAT:
        return single_conversation_id(check_user_id(send_id, "sendID"), check_user_id(recv_id, "recvID"))
    if session_type == GROUP_CHAT:
        return group_conversation_id(check_group_id(group_id))
    if session_type == NOTIFICATION_CHAT:
        check_user_id(send_id, "sendID")
        check_user_id(recv_id, "recvID")
        low, high = sorted((send_id, recv_id))
        return f"sn_{low}_{high}"
    raise ValueError(f"unsupported session type {session_type}")


def is_group_conversation(conversation_id: str) -> bool:
    return conversation_id.startswith("sg_")


def shard_of(conversation_id: str, shards: int) -> int:
    """Stable across processes and restarts (crc32, never Python's salted hash())."""
    return zlib.crc32(conversation_id.encode("utf-8")) % shards


def shards_of_part(shards: list[int], part: str) -> list[int]:
    """The shards one of several transfer processes consumes: part "i/n" (1-based) takes every n-th
    shard from the i-th on, so n processes share the shards without overlap; "" takes them all."""
    if not part.strip():
        return list(shards)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", part)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"transfer part must be i/n with 1 <= i <= n, got {part!r}")
    index, count = int(match[1]), int(match[2])
    mine = list(shards)[index - 1 :: count]
    if not mine:
        raise ValueError(f"transfer part {index}/{count} has no shard: only {len(shards)} shard(s) to share")
    return mine


def transfer_queue(shard: int) -> str:
    return f"transfer.{shard}"


def doc_index(seq: int) -> int:
    return (seq - 1) // MSGS_PER_DOC


def doc_slot(seq: int) -> int:
    return (seq - 1) % MSGS_PER_DOC


def doc_id(conversation_id: str, seq: int) -> str:
    return f"{conversation_id}:{doc_index(seq)}"


def peer_of(conversation_id: str, owner: str) -> str:
    """The other user of a single chat `si_<a>_<b>` (ids sorted), seen from `owner`."""
    body = conversation_id.removeprefix("si_")
    if body.startswith(f"{owner}_") and body != f"{owner}_{owner}":
        return body[len(owner) + 1 :]
    if body.endswith(f"_{owner}"):
        return body[: -len(owner) - 1]
    return owner
