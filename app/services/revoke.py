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
from app.core import webhooks as webhook_rules
from app.core.constants import (
    GROUP_CHAT,
    MSG_FROM_SYSTEM,
    MSG_REVOKE_NOTIFICATION,
    NOTIFICATION_BEGIN,
)
from app.core.errors import NO_PERMISSION, RECORD_NOT_FOUND, ImError
from app.pipeline import webhooks
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
        # Revoked already: its tips again, under the same clientMsgID, so a revoke whose tips was
        # never accepted (its caller got an error) gets it now, and one that was sends nothing more.
        send_tips(msg[msg_ops.REVOKE_FIELD], admin, conversation_id, msg, operation_id)
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
    first = messages.set_revoke(conversation_id, seq, record)
    if not first:  # another call revoked it meanwhile: the record is theirs
        record = (stored_msg(conversation_id, seq) or {}).get(msg_ops.REVOKE_FIELD) or record
    msg_cache.update_cached_msg(
        conversation_id, seq, lambda cached: msg_ops.revoked_form(cached, cached.get(msg_ops.REVOKE_FIELD) or record)
    )
    send_tips(record, admin, conversation_id, msg, operation_id)
    if first:  # OpenIM's afterRevokeMsg webhook, off the hot path (app/tasks/webhooks.py)
        body = webhook_rules.revoke_body(conversation_id, seq, revoker, operation_id)
        webhooks.enqueue_after("afterRevokeMsg", [body], operation_id)
    return first


def send_tips(
    record: dict[str, Any], admin: bool, conversation_id: str, msg: dict[str, Any], operation_id: str
) -> None:
    """The 2101 notification, in the revoked message's own conversation (so it follows it in seq
    order and reaches every member, online or not), from the revoker where the revoker is a party."""
    revoker, now_ms = str(record.get("user_id", "")), int(record.get("time", 0))
    session_type = int(msg.get("session_type", 0))
    tips = msg_ops.revoke_tips(revoker, msg, conversation_id, now_ms, admin)
    if session_type == GROUP_CHAT:
        send_id, recv_id, group_id = revoker, "", msg.get("group_id", "")
    else:  # single chats and notification chats: between the message's two users
        sender, receiver = msg.get("send_id", ""), msg.get("recv_id", "")
        if revoker == receiver:
            sender, receiver = receiver, sender
        send_id, recv_id, group_id = sender, receiver, ""
    doc = msg_ops.system_msg(
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
        client_msg_id=msg_ops.revoke_tips_id(conversation_id, int(msg.get("seq", 0))),
    )
    dispatch.send_one(doc)
