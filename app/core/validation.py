"""Validation at the edge: every limit and check on what clients send, in one place (P7, P8).

Pure functions: each returns the checked (or parsed) value, or raises ImError with OpenIM's code,
ARGS_ERROR (1001) for malformed or oversized input and NO_PERMISSION (1002) for input that speaks
for someone else or for the server.

Ids: user and group ids are 1 to 64 characters without `_`, `:`, `{`, `}`, whitespace or control
characters, so that a conversation id (`si_<a>_<b>`, `sg_<g>`, `sn_<a>_<b>`, `n_<g>`, `n_<a>_<b>`)
has exactly one reading, and ids are safe in Redis keys (`:`, hash tags `{}`) and in log lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from app.core.constants import CONTENT_TYPE_BEGIN, HAS_READ_RECEIPT, MSG_FROM_USER, NOTIFICATION_BEGIN, NOTIFICATION_END
from app.core.errors import ARGS_ERROR, NO_PERMISSION, ImError
from app.proto import sdkws_pb2 as pb

# --- limits ----------------------------------------------------------------------------------

MAX_ID_CHARS = 64  # user, group and clientMsgIDs (OpenIM's ids are at most 64 characters)
MAX_CONVERSATION_ID_CHARS = len("si__") + 2 * MAX_ID_CHARS
MAX_OPERATION_ID_CHARS = 128
MAX_CONTENT_BYTES = 40 * 1024  # the default of MAX_CONTENT_BYTES (app/config.py)
MAX_EX_BYTES = 8 * 1024  # ex, attachedInfo, offlinePushInfo.ex / signalInfo
MAX_NICKNAME_CHARS = 255
MAX_FACE_URL_CHARS = 1024
MAX_PUSH_TITLE_CHARS = 256
MAX_PUSH_DESC_CHARS = 1024
MAX_PUSH_SOUND_CHARS = 256
MAX_OPTIONS = 32  # OpenIM defines a dozen option keys
MAX_OPTION_KEY_CHARS = 64
MAX_AT_USERS = 500
# Everything but the content: 100 messages share one MongoDB document (16 MB), so the whole MsgData
# must stay well under 160 KB with the default content limit.
MSGDATA_EXTRA_BYTES = 32 * 1024
MAX_IDS_PER_REQUEST = 1000  # user ids in one SubUserOnlineStatus, REST id lists

# Pulls (1002, 1005, 1006, 1007). OpenIM's SDKs pull at most 100 messages per conversation and
# about 100 messages per request (SplitPullMsgNum); these caps leave room and bound an answer.
MAX_PULL_NUM = 100  # messages per conversation in one range (OpenIM's)
MAX_PULL_CONVERSATIONS = 500  # distinct conversations per request (the SDK's maxConversations)
MAX_PULL_MSGS = 1000  # messages in one pull answer
MAX_SEQ_LIST = 1000  # distinct seqs in one PullMsgBySeqList

# No `_` (the conversation id separator), `:` (Redis key separator), braces (Redis hash tags),
# whitespace, C0/C1 controls, surrogates, zero-width and BOM characters.
_ID = re.compile(r"[^\s_:{}\x00-\x1f\x7f-\x9f\ud800-\udfff\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _checked_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ImError(ARGS_ERROR, f"{what} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise ImError(ARGS_ERROR, f"{what} is longer than {MAX_ID_CHARS} characters")
    if not _ID.fullmatch(value):
        raise ImError(ARGS_ERROR, f"{what} may not contain '_', ':', braces, whitespace or control characters")
    return value


def check_user_id(value: object, what: str = "userID") -> str:
    return _checked_id(value, what)


def check_group_id(value: object, what: str = "groupID") -> str:
    return _checked_id(value, what)


def check_user_ids(values: Iterable[object], what: str = "userIDs", limit: int = MAX_IDS_PER_REQUEST) -> list[str]:
    """Each id checked, duplicates dropped (first order kept), at most `limit` of them."""
    out = list(dict.fromkeys(check_user_id(v, what) for v in values))
    if len(out) > limit:
        raise ImError(ARGS_ERROR, f"at most {limit} {what} per request")
    return out


def check_client_msg_id(value: str) -> str:
    if not value or len(value) > MAX_ID_CHARS:
        raise ImError(ARGS_ERROR, f"clientMsgID is required (at most {MAX_ID_CHARS} characters)")
    if _CONTROL.search(value):
        raise ImError(ARGS_ERROR, "clientMsgID may not contain control characters")
    return value


def check_operation_id(value: str) -> str:
    if len(value) > MAX_OPERATION_ID_CHARS or _CONTROL.search(value):
        raise ImError(ARGS_ERROR, f"operationID must be at most {MAX_OPERATION_ID_CHARS} printable characters")
    return value


class ConversationRef(NamedTuple):
    """A parsed conversation id: its prefix (si, sg, sn, n) and the user or group ids it names."""

    prefix: str
    ids: tuple[str, ...]


def check_conversation_id(value: object) -> ConversationRef:
    """The one reading of a conversation id: `si_a_b`, `sn_a_b` (users), `sg_g` (a group),
    `n_g` or `n_a_b` (OpenIM's notification conversations)."""
    if not isinstance(value, str) or not value or len(value) > MAX_CONVERSATION_ID_CHARS:
        raise ImError(ARGS_ERROR, f"conversationID must be 1 to {MAX_CONVERSATION_ID_CHARS} characters")
    prefix, _, rest = value.partition("_")
    parts = tuple(rest.split("_")) if rest else ()
    expected = {"si": (2,), "sn": (2,), "sg": (1,), "n": (1, 2)}.get(prefix)
    if expected is None or len(parts) not in expected:
        raise ImError(ARGS_ERROR, f"conversationID {value[:80]!r} is not si_<a>_<b>, sg_<g>, sn_<a>_<b> or n_...")
    for part in parts:
        _checked_id(part, "conversationID part")
    return ConversationRef(prefix, parts)


def check_conversation_ids(values: Iterable[object], limit: int = MAX_PULL_CONVERSATIONS) -> list[str]:
    """Each id checked, duplicates dropped, at most `limit` distinct ones."""
    out: dict[str, None] = {}
    for value in values:
        check_conversation_id(value)
        out[str(value)] = None
        if len(out) > limit:
            raise ImError(ARGS_ERROR, f"at most {limit} conversations per request")
    return list(out)


# --- message fields --------------------------------------------------------------------------


def _bounded_text(value: str, limit: int, what: str) -> None:
    """`limit` in UTF-8 bytes; a protobuf string is always valid UTF-8 (no lone surrogates)."""
    if len(value) > limit or len(value.encode("utf-8")) > limit:
        raise ImError(ARGS_ERROR, f"{what} is larger than {limit} bytes")


def mongo_key_problem(key: str) -> str | None:
    """Why MongoDB would refuse `key` as a field name (NUL; a leading `$` or a `.`, which its
    update paths read as operators and nesting), or None: the one rule for the edge and the pipeline."""
    if "\x00" in key:
        return "contains a NUL character"
    if key.startswith("$") or "." in key:
        return "starts with $ or contains a dot"
    return None


def check_option_key(key: str) -> str:
    """MongoDB stores options as a sub-document: its keys are field names (no NUL, no `.`, no
    leading `$`), and never controls or a length that bloats every stored slot."""
    if not key or len(key) > MAX_OPTION_KEY_CHARS:
        raise ImError(ARGS_ERROR, f"options keys must be 1 to {MAX_OPTION_KEY_CHARS} characters")
    if mongo_key_problem(key) or _CONTROL.search(key):
        raise ImError(ARGS_ERROR, "options keys may not start with '$' or contain '.' or control characters")
    return key


def check_msgdata(msg: pb.MsgData, max_content: int = MAX_CONTENT_BYTES) -> pb.MsgData:
    """Bound every field of a client's MsgData and the whole of it (ids, sizes, options keys)."""
    if msg.sendID:
        check_user_id(msg.sendID, "sendID")
    if msg.recvID:
        check_user_id(msg.recvID, "recvID")
    if msg.groupID:
        check_group_id(msg.groupID, "groupID")
    check_client_msg_id(msg.clientMsgID)
    if len(msg.serverMsgID) > MAX_ID_CHARS:
        raise ImError(ARGS_ERROR, f"serverMsgID is longer than {MAX_ID_CHARS} characters")
    if len(msg.content) > max_content:
        raise ImError(ARGS_ERROR, f"content is larger than {max_content} bytes")
    _bounded_text(msg.senderNickname, MAX_NICKNAME_CHARS * 4, "senderNickname")
    if len(msg.senderNickname) > MAX_NICKNAME_CHARS:
        raise ImError(ARGS_ERROR, f"senderNickname is longer than {MAX_NICKNAME_CHARS} characters")
    if len(msg.senderFaceURL) > MAX_FACE_URL_CHARS:
        raise ImError(ARGS_ERROR, f"senderFaceURL is longer than {MAX_FACE_URL_CHARS} characters")
    _bounded_text(msg.ex, MAX_EX_BYTES, "ex")
    _bounded_text(msg.attachedInfo, MAX_EX_BYTES, "attachedInfo")
    if len(msg.options) > MAX_OPTIONS:
        raise ImError(ARGS_ERROR, f"at most {MAX_OPTIONS} options")
    for key in msg.options:
        check_option_key(key)
    if msg.HasField("offlinePushInfo"):
        push = msg.offlinePushInfo
        _bounded_text(push.title, MAX_PUSH_TITLE_CHARS * 4, "offlinePushInfo.title")
        _bounded_text(push.desc, MAX_PUSH_DESC_CHARS * 4, "offlinePushInfo.desc")
        _bounded_text(push.ex, MAX_EX_BYTES, "offlinePushInfo.ex")
        _bounded_text(push.iOSPushSound, MAX_PUSH_SOUND_CHARS, "offlinePushInfo.iOSPushSound")
        _bounded_text(push.signalInfo, MAX_EX_BYTES, "offlinePushInfo.signalInfo")
    if len(msg.atUserIDList) > MAX_AT_USERS:
        raise ImError(ARGS_ERROR, f"atUserIDList names at most {MAX_AT_USERS} users")
    for user_id in msg.atUserIDList:
        check_user_id(user_id, "atUserIDList")
    if msg.ByteSize() > max_content + MSGDATA_EXTRA_BYTES:
        raise ImError(ARGS_ERROR, f"the message is larger than {max_content + MSGDATA_EXTRA_BYTES} bytes")
    return msg


def check_client_origin(msg: pb.MsgData) -> None:
    """Only the server sends system messages (msgFrom 200) and notification content types; a
    client may send user message types and read receipts (which speak only for the sender)."""
    if msg.msgFrom not in (0, MSG_FROM_USER):
        raise ImError(NO_PERMISSION, f"msgFrom {msg.msgFrom} is the server's; clients send {MSG_FROM_USER}")
    content_type = msg.contentType
    if content_type == HAS_READ_RECEIPT or CONTENT_TYPE_BEGIN < content_type < NOTIFICATION_BEGIN:
        return
    if NOTIFICATION_BEGIN <= content_type <= NOTIFICATION_END:
        raise ImError(NO_PERMISSION, f"contentType {content_type} is a notification only the server sends")
    raise ImError(ARGS_ERROR, f"contentType {content_type} is not a message type ({CONTENT_TYPE_BEGIN + 1}-999)")


def check_read_receipt(content: bytes, sender: str, conversation_id: str) -> int:
    """A client's read receipt (OpenIM's MarkAsReadTips as flat JSON): its hasReadSeq. It may name
    only its sender and its own conversation; nested values are refused (no deep JSON downstream)."""
    try:
        body = json.loads(content.decode("utf-8"))
        if isinstance(body, dict) and set(body) == {"detail"} and isinstance(body["detail"], str):
            body = json.loads(body["detail"])  # OpenIM's {"detail": MarkAsReadTips as JSON}
    except (ValueError, RecursionError) as exc:
        raise ImError(ARGS_ERROR, "read receipt content must be a JSON object") from exc
    if not isinstance(body, dict):
        raise ImError(ARGS_ERROR, "read receipt content must be a JSON object")
    for key, value in body.items():
        flat = value is None or isinstance(value, str | int | float | bool)
        if not flat and not (isinstance(value, list) and all(is_int(v) for v in value)):
            raise ImError(ARGS_ERROR, f"read receipt field {key[:40]!r} must be a string, a number or a list of seqs")
    named_user = body.get("markAsReadUserID")
    if named_user not in (None, "", sender):
        raise ImError(NO_PERMISSION, "a read receipt may only speak for its sender")
    named_conv = body.get("conversationID")
    if named_conv not in (None, "", conversation_id):
        raise ImError(NO_PERMISSION, "a read receipt may only name its own conversation")
    seq = body.get("hasReadSeq")
    if isinstance(seq, str) and seq.isdigit():
        seq = int(seq)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ImError(ARGS_ERROR, "read receipt needs a non-negative integer hasReadSeq")
    return seq


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON true is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


# --- pulls -----------------------------------------------------------------------------------


def dedupe_seq_ranges(req: pb.PullMessageBySeqsReq) -> list[pb.SeqRange]:
    """One range per conversation (the last one named wins, as OpenIM's answer map does), ids
    checked, at most MAX_PULL_CONVERSATIONS conversations."""
    by_conv: dict[str, pb.SeqRange] = {}
    for seq_range in req.seqRanges:
        if seq_range.conversationID not in by_conv:
            check_conversation_id(seq_range.conversationID)
            if len(by_conv) >= MAX_PULL_CONVERSATIONS:
                raise ImError(ARGS_ERROR, f"at most {MAX_PULL_CONVERSATIONS} conversations per pull")
        by_conv[seq_range.conversationID] = seq_range
    return list(by_conv.values())


def dedupe_seq_lists(req: pb.GetSeqMessageReq) -> dict[str, list[int]]:
    """conversation -> its distinct seqs (a conversation named twice gets the union), ids checked,
    at most MAX_PULL_CONVERSATIONS conversations and MAX_SEQ_LIST seqs."""
    out: dict[str, set[int]] = {}
    total = 0
    for wanted in req.conversations:
        seqs = out.get(wanted.conversationID)
        if seqs is None:
            check_conversation_id(wanted.conversationID)
            if len(out) >= MAX_PULL_CONVERSATIONS:
                raise ImError(ARGS_ERROR, f"at most {MAX_PULL_CONVERSATIONS} conversations per pull")
            seqs = out[wanted.conversationID] = set()
        before = len(seqs)
        seqs.update(wanted.seqs)
        total += len(seqs) - before
        if total > MAX_SEQ_LIST:
            raise ImError(ARGS_ERROR, f"at most {MAX_SEQ_LIST} seqs per request")
    return {conv: sorted(seqs) for conv, seqs in out.items()}


def check_pull_total(count: int) -> None:
    if count > MAX_PULL_MSGS:
        raise ImError(ARGS_ERROR, f"at most {MAX_PULL_MSGS} messages per pull: ask for fewer conversations or less")
