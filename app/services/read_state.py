"""Read state: a user's read seq in a conversation, and the receipts it sends (OpenIM's
MarkMsgsAsRead, MarkConversationAsRead, SetConversationHasReadSeq).

A read seq only moves forward and never past the visible max seq (P5). The receipt is OpenIM's
HasReadReceipt (2200) with a MarkAsReadTips: in a single chat to the peer (the reader's other
devices get it too, as the sender's copy), in a group to the reader's own devices only. Receipts
enter the pipeline through the node's batcher like any message (app/services/dispatch.py); they
take no seq (pushed to whoever is online, as OpenIM's unreliable notifications).
"""

from __future__ import annotations

import time

from app.core import msg_ops
from app.core.constants import HAS_READ_RECEIPT, SINGLE_CHAT
from app.core.conversation import peer_of
from app.core.errors import ARGS_ERROR, ImError
from app.services import dispatch, history
from app.store.mongo import seq_users
from app.store.redis import badges, msg_cache


def raise_read_seq(user_id: str, conversation_id: str, seq: int) -> tuple[int, int]:
    """Move the user's read seq forward (never back, never past the visible max): (before, after)."""
    max_seq = history.visible_max_seqs([conversation_id])[conversation_id]
    before = history.read_seqs(user_id, [conversation_id])[conversation_id]
    after = int(msg_cache.raise_read_seq(conversation_id, user_id, min(seq, max_seq)))
    seq_users.raise_read_seqs([(conversation_id, user_id, after)])
    badges.read(user_id, conversation_id)
    return min(before, after), after


def check_not_past_max(conversation_id: str, seq: int) -> None:
    """OpenIM answers ArgsError for a read seq past the conversation's max."""
    if seq < 0:
        raise ImError(ARGS_ERROR, "hasReadSeq must not be negative")
    if seq > history.visible_max_seqs([conversation_id])[conversation_id]:
        raise ImError(ARGS_ERROR, "hasReadSeq must not be bigger than maxSeq")


def mark_conversation_as_read(
    reader: str, conversation_id: str, has_read_seq: int, seqs: list[int], operation_id: str
) -> int:
    """The read seq moves to hasReadSeq; a single chat's peer gets the seqs read, a group's reader
    its other devices. Returns the read seq now held."""
    before, after = raise_read_seq(reader, conversation_id, has_read_seq)
    single = conversation_id.startswith("si_")
    read = sorted(set(range(before + 1, after + 1)) | {s for s in seqs if 0 < s <= after}) if single else []
    send_receipt(reader, receipt_recipient(reader, conversation_id), conversation_id, read, after, operation_id)
    return after


def mark_msgs_as_read(reader: str, conversation_id: str, seqs: list[int], operation_id: str) -> int:
    """These seqs are read; the read seq moves to the last of them (OpenIM's MarkMsgsAsRead)."""
    if not seqs:
        raise ImError(ARGS_ERROR, "seqs must not be empty")
    has_read_seq = seqs[-1]
    check_not_past_max(conversation_id, has_read_seq)
    _, after = raise_read_seq(reader, conversation_id, has_read_seq)
    recipient = receipt_recipient(reader, conversation_id)
    send_receipt(reader, recipient, conversation_id, sorted(set(seqs)), after, operation_id)
    return after


def set_has_read_seq(reader: str, conversation_id: str, has_read_seq: int, notify: bool, operation_id: str) -> int:
    """OpenIM's SetConversationHasReadSeq: the read seq (forward only), the reader's devices told."""
    check_not_past_max(conversation_id, has_read_seq)
    _, after = raise_read_seq(reader, conversation_id, has_read_seq)
    if notify:
        send_receipt(reader, reader, conversation_id, [], after, operation_id)
    return after


def receipt_recipient(reader: str, conversation_id: str) -> str:
    """Who a receipt goes to: a single chat's peer; in a group the reader itself (its devices)."""
    return peer_of(conversation_id, reader) if conversation_id.startswith("si_") else reader


def send_receipt(
    reader: str, recipient: str, conversation_id: str, seqs: list[int], has_read_seq: int, operation_id: str
) -> None:
    """A 2200 from the reader: to the peer of a single chat, or to the reader (a note to self:
    all of the reader's devices) for a group's self-sync."""
    tips = {"markAsReadUserID": reader, "conversationID": conversation_id, "seqs": seqs, "hasReadSeq": has_read_seq}
    doc = msg_ops.system_msg(
        reader,
        recipient,
        "",
        SINGLE_CHAT,
        HAS_READ_RECEIPT,
        msg_ops.notification_content(tips),
        msg_ops.ONLINE_TIPS_OPTIONS,
        int(time.time() * 1000),
        operation_id,
    )
    dispatch.send_one(doc)
