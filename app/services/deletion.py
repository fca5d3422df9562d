"""Delete and clear (OpenIM's DeleteMsgs, ClearConversationsMsg, UserClearAllMsg,
DeleteMsgPhysicalBySeq, DeleteMsgPhysical).

Delete for me: the user joins the slots' `del_list` (MongoDB, then the cache entries), and pulls
show them status 4 without content. Clear: the user's min seq moves past the conversation's max
(MongoDB's seq_user, then Redis) and its read seq to the max. Physical deletes (admin): slots
emptied for everyone, or the conversation's min seq moved. MongoDB is always written first, so
every effect outlives a Redis that loses its data. The caller's devices learn of a delete (2102) or
a clear (1703) through the pipeline, online only, as OpenIM sends them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from app.core import msg_ops
from app.core.constants import (
    CLEAR_CONVERSATION_NOTIFICATION,
    DELETE_MSGS_NOTIFICATION,
    SINGLE_CHAT,
)
from app.services import dispatch, history, read_state
from app.store.mongo import conversations, messages, seq_blocks, seq_users
from app.store.redis import msg_cache

log = logging.getLogger(__name__)

CACHE_SWEEP_CHUNK = 500  # cache keys deleted per round trip below a new conversation min seq


def _self_sync(user_id: str, content_type: int, tips: dict[str, Any], operation_id: str) -> None:
    """A notification to all of the user's devices (a note to self: every device gets it)."""
    doc = msg_ops.system_msg(
        user_id,
        user_id,
        "",
        SINGLE_CHAT,
        content_type,
        msg_ops.notification_content(tips),
        msg_ops.ONLINE_TIPS_OPTIONS,
        int(time.time() * 1000),
        operation_id,
    )
    dispatch.send_one(doc)


def _add_deleter(user_id: str) -> Any:
    def change(msg: dict[str, Any]) -> dict[str, Any]:
        users = list(msg.get(msg_ops.DEL_LIST_FIELD) or [])
        if user_id not in users:
            users.append(user_id)
        return {**msg, msg_ops.DEL_LIST_FIELD: users}

    return change


def delete_for_me(user_id: str, conversation_id: str, seqs: list[int], sync_self: bool, operation_id: str) -> None:
    """The messages disappear for this user only (their other devices are told with 2102)."""
    history.check_members(user_id, [conversation_id])
    high = history.visible_max_seqs([conversation_id])[conversation_id]
    wanted = sorted({s for s in seqs if 0 < s <= high})
    if wanted:
        messages.add_to_del_list(conversation_id, wanted, user_id)
        for seq in wanted:
            msg_cache.update_cached_msg(conversation_id, seq, _add_deleter(user_id))
    if sync_self:
        tips = {"userID": user_id, "conversationID": conversation_id, "seqs": wanted}
        _self_sync(user_id, DELETE_MSGS_NOTIFICATION, tips, operation_id)


def clear_for_me(user_id: str, conversation_ids: list[str] | None, sync_self: bool, operation_id: str) -> list[str]:
    """The user's min seq of each conversation (all of theirs for None) moves past its max seq and
    their read seq up to it; conversations the user has no record of are left out (as OpenIM).
    Returns the conversations cleared."""
    owned = conversations.conversations_of(user_id)
    convs = sorted(owned if conversation_ids is None else set(conversation_ids) & set(owned))
    if not convs:
        return []
    highs = history.user_max_seqs(user_id, convs)
    mins = {c: highs[c] + 1 for c in convs}
    seq_users.raise_min_seqs(user_id, mins)  # MongoDB first: it refills Redis when Redis lost it
    msg_cache.raise_user_min_seqs(user_id, mins)
    for conv in convs:
        if highs[conv]:
            read_state.raise_read_seq(user_id, conv, highs[conv])
    if sync_self:
        tips = {"userID": user_id, "conversationIDs": convs}
        _self_sync(user_id, CLEAR_CONVERSATION_NOTIFICATION, tips, operation_id)
    return convs


def delete_physically(conversation_id: str, seqs: list[int]) -> list[int]:
    """Admin: the messages are gone for everyone (MongoDB slots emptied, cache entries deleted)."""
    high = history.visible_max_seqs([conversation_id])[conversation_id]
    wanted = sorted({s for s in seqs if 0 < s <= high})
    if wanted:
        messages.delete_physically(conversation_id, wanted)
        msg_cache.delete_cached_msgs(conversation_id, wanted)
    return wanted


def delete_before(conversation_id: str, before_ms: int) -> int:
    """Admin: every message of the conversation sent before `before_ms` is gone for everyone: the
    conversation's min seq moves past the newest of them and their slots are emptied. Returns the
    new min seq (0: nothing to delete)."""
    cut = messages.last_seq_before(conversation_id, before_ms)
    if cut <= 0:
        return 0
    seq_blocks.raise_min_seq(conversation_id, cut + 1)
    history.forget_conversation_min_seq(conversation_id)
    messages.delete_through(conversation_id, cut)
    _sweep_cache_below(conversation_id, cut)
    return cut + 1


def _sweep_cache_below(conversation_id: str, cut: int) -> None:
    """Cache entries live a day: delete them from `cut` down until a chunk finds none left."""
    top = cut
    while top > 0:
        chunk = list(range(max(1, top - CACHE_SWEEP_CHUNK + 1), top + 1))
        if not msg_cache.get_cached_msgs(conversation_id, chunk):
            return
        msg_cache.delete_cached_msgs(conversation_id, chunk)
        top = chunk[0] - 1
