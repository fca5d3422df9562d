"""Read state: a user's read seq in a conversation, and the read receipt its peer gets.

A read seq only moves forward and never past the visible max seq (P5). The receipt is OpenIM's
HasReadReceipt notification, handed to the push stage through the pipeline's journal like every
other hand-off, so a push worker killed on a Redis broker does not lose it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from app.celery_app import celery_app
from app.core import push_frames
from app.core.constants import HAS_READ_RECEIPT, MSG_FROM_SYSTEM, MSG_STATUS_SENDING, SINGLE_CHAT
from app.pipeline import journal
from app.services import history
from app.store.mongo import seq_users
from app.store.redis import badges, msg_cache

PUSH_TASK = "push.batch"


def raise_read_seq(user_id: str, conversation_id: str, seq: int) -> tuple[int, int]:
    """Move the user's read seq forward (never back, never past the visible max): (before, after)."""
    max_seq = history.visible_max_seqs([conversation_id])[conversation_id]
    before = history.read_seqs(user_id, [conversation_id])[conversation_id]
    after = int(msg_cache.raise_read_seq(conversation_id, user_id, min(seq, max_seq)))
    seq_users.raise_read_seqs([(conversation_id, user_id, after)])
    badges.read(user_id, conversation_id)
    return min(before, after), after


def send_read_receipt(
    reader: str, peer: str, conversation_id: str, seqs: list[int], has_read_seq: int, operation_id: str
) -> None:
    """Tell the peer of a single chat which seqs the reader has read (seq 0: pushed, not stored)."""
    tips = {"markAsReadUserID": reader, "conversationID": conversation_id, "seqs": seqs, "hasReadSeq": has_read_seq}
    notification = read_receipt_notification(reader, peer, tips, operation_id)
    # by name: the gateway does not load the push stage's task module
    journal.send(celery_app.signature(PUSH_TASK), [{conversation_id: [notification]}], "push")


def read_receipt_notification(reader: str, peer: str, tips: dict[str, Any], operation_id: str) -> dict[str, Any]:
    """OpenIM's HasReadReceipt notification: from the reader to the peer, system-sent, not stored."""
    now = int(time.time() * 1000)
    return {
        "send_id": reader,
        "recv_id": peer,
        "group_id": "",
        "client_msg_id": uuid.uuid4().hex,
        "server_msg_id": uuid.uuid4().hex,
        "sender_platform_id": 0,
        "sender_nickname": "",
        "sender_face_url": "",
        "session_type": SINGLE_CHAT,
        "msg_from": MSG_FROM_SYSTEM,
        "content_type": HAS_READ_RECEIPT,
        "content": json.dumps({"detail": json.dumps(tips, separators=(",", ":"))}, separators=(",", ":")),
        "seq": 0,
        "send_time": now,
        "create_time": now,
        "status": MSG_STATUS_SENDING,
        "is_read": False,
        "options": {
            "history": False,
            "persistent": False,
            "offlinePush": False,
            "unreadCount": False,
            "conversationUpdate": False,
            "senderSync": True,
        },
        "offline_push": None,
        "at_user_id_list": [],
        "attached_info": "",
        "ex": "",
        push_frames.OPERATION_ID: operation_id,
    }
