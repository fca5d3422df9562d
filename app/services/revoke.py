"""Revoke (OpenIM's RevokeMsg): the slot's revoke record in MongoDB, the cache entry replaced by the
revoked form, and a 2101 RevokeMsgTips to everyone in the conversation, through the pipeline.

MongoDB is written first and conditionally (only a slot without a revoke record takes one), so a
repeated revoke is recognised there and answered as done, without a second notification. From then
on every pull shows the revoked form (app/core/msg_ops.py view_for), from the cache or MongoDB.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from app.config import settings
from app.core import msg_ops
from app.core.constants import (
    GROUP_CHAT,
    MSG_FROM_SYSTEM,
    MSG_REVOKE_NOTIFICATION,
    NOTIFICATION_BEGIN,
    SINGLE_CHAT,
)
from app.core.errors import NO_PERMISSION, RECORD_NOT_FOUND, ImError
from app.services import dispatch, history, profiles
from app.store.mongo import groups as group_store
from app.store.mongo import messages
from app.store.redis import msg_cache

log = logging.getLogger(__name__)


def stored_msg(conversation_id: str, seq: int) -> dict[str, Any] | None:
    """The stored message with its marks, cache first, then MongoDB."""
    found = msg_cache.get_cached_msgs(conversation_id, [seq]).get(seq)
    if found is None:
        found = messages.find_msgs(conversation_id, [seq]).get(seq)
    return found


def revoke(revoker: str, admin: bool, conversation_id: str, seq: int, operation_id: str) -> bool:
    """Revoke one message; True when this call revoked it, False when it was revoked already."""
    if not admin:
        history.check_members(revoker, [conversation_id])
    high = history.visible_max_seqs([conversation_id])[conversation_id]
    if not admin:
        low = history.min_seqs(revoker, [conversation_id])[conversation_id]
        if seq < low:
            raise ImError(RECORD_NOT_FOUND, f"no message {seq} in {conversation_id}")
    msg = stored_msg(conversation_id, seq) if 0 < seq <= high else None
    if msg is None:
        raise ImError(RECORD_NOT_FOUND, f"no message {seq} in {conversation_id}")
    if msg.get(msg_ops.REVOKE_FIELD):
        return False
    content_type = int(msg.get("content_type", 0))
    if not admin and (content_type >= NOTIFICATION_BEGIN or int(msg.get("msg_from", 0)) == MSG_FROM_SYSTEM):
        raise ImError(NO_PERMISSION, "only an admin may revoke a system message or a notification")
    now_ms = int(time.time() * 1000)
    roles: dict[str, int] = {}
    if int(msg.get("session_type", 0)) == GROUP_CHAT and not admin:
        roles = group_store.member_roles(msg.get("group_id", ""), sorted({revoker, msg.get("send_id", "")}))
    role = msg_ops.check_may_revoke(msg, revoker, admin, roles, now_ms, settings.revoke_window_seconds)
    record = msg_ops.revoke_record(revoker, role, profiles.sender(revoker)[0], now_ms)
    if not messages.set_revoke(conversation_id, seq, record):
        return False  # another call revoked it meanwhile: its notification is on its way
    msg_cache.update_cached_msg(
        conversation_id, seq, lambda cached: msg_ops.revoked_form(cached, cached.get(msg_ops.REVOKE_FIELD) or record)
    )
    dispatch.send_one(tips_msg(revoker, admin, conversation_id, msg, now_ms, operation_id))
    return True


def tips_msg(
    revoker: str, admin: bool, conversation_id: str, msg: dict[str, Any], now_ms: int, operation_id: str
) -> dict[str, Any]:
    """The 2101 notification, in the revoked message's own conversation (so it follows it in seq
    order and reaches every member, online or not), from the revoker where the revoker is a party."""
    session_type = int(msg.get("session_type", 0))
    tips = msg_ops.revoke_tips(revoker, msg, conversation_id, now_ms, admin)
    if session_type == SINGLE_CHAT:
        parties = {msg.get("send_id", ""), msg.get("recv_id", "")}
        send_id = revoker if revoker in parties else msg.get("send_id", "")
        recv_id = msg_ops.peer_of(conversation_id, send_id)
        group_id = ""
    else:
        send_id, recv_id, group_id = revoker, "", msg.get("group_id", "")
    return msg_ops.system_msg(
        send_id,
        recv_id,
        group_id,
        session_type,
        MSG_REVOKE_NOTIFICATION,
        msg_ops.notification_content(tips),
        msg_ops.STORED_TIPS_OPTIONS,
        now_ms,
        operation_id,
        profiles.sender(send_id),
    )
