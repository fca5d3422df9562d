"""Pure rules of the message operations (revoke, delete, clear, read, server send): what a revoked
or deleted message pulls as, who may revoke, and the system messages the server sends about them.

A stored message (cache entry or MongoDB slot) may carry two marks beside its fields, named as
OpenIM's slot fields: `revoke` (the revoke record) and `del_list` (users who deleted it for
themselves). `view_for` turns a stored message into what one user is shown; every pull goes
through it, so the revoked content never leaves the server again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from app.core import push_frames
from app.core.constants import (
    GROUP_ADMIN,
    GROUP_CHAT,
    GROUP_ORDINARY,
    GROUP_OWNER,
    MSG_FROM_SYSTEM,
    MSG_REVOKE_NOTIFICATION,
    MSG_STATUS_DELETED,
    MSG_STATUS_SENDING,
    SINGLE_CHAT,
)
from app.core.errors import NO_PERMISSION, ImError

REVOKE_FIELD = "revoke"
DEL_LIST_FIELD = "del_list"

# Options of the notifications (OpenIM's option keys; a missing key means true).
# Stored in the conversation (a seq, pulled by devices that were offline), never counted unread,
# never an offline push: the revoke tips.
STORED_TIPS_OPTIONS = {
    "history": True,
    "persistent": True,
    "unreadCount": False,
    "offlinePush": False,
    "conversationUpdate": False,
    "senderSync": True,
}
# Online-only syncs to the user's own devices (delete, clear, read self-sync), as OpenIM sends them
# (its unreliable notifications): pushed with seq 0; a device that was offline learns by pulling.
ONLINE_TIPS_OPTIONS = {
    "history": False,
    "persistent": False,
    "unreadCount": False,
    "offlinePush": False,
    "conversationUpdate": False,
    "senderSync": True,
}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def notification_content(detail: dict[str, Any]) -> str:
    """OpenIM's NotificationElem: `{"detail": "<the tips as JSON>"}`."""
    return compact({"detail": compact(detail)})


# --- revoke --------------------------------------------------------------------------------------


def revoke_record(user_id: str, role: int, nickname: str, now_ms: int) -> dict[str, Any]:
    """OpenIM's RevokeModel, as the slot's `revoke` field."""
    return {"role": role, "user_id": user_id, "nickname": nickname, "time": now_ms}


def revoked_content(msg: dict[str, Any], revoke: dict[str, Any]) -> str:
    """OpenIM's MessageRevokedContent in a NotificationElem: what a revoked message pulls as."""
    return notification_content(
        {
            "revokerID": revoke.get("user_id", ""),
            "revokerRole": int(revoke.get("role", 0)),
            "clientMsgID": msg.get("client_msg_id", ""),
            "revokerNickname": revoke.get("nickname", ""),
            "revokeTime": int(revoke.get("time", 0)),
            "sourceMessageSendTime": int(msg.get("send_time", 0)),
            "sourceMessageSendID": msg.get("send_id", ""),
            "sourceMessageSenderNickname": msg.get("sender_nickname", ""),
            "sessionType": int(msg.get("session_type", 0)),
            "seq": int(msg.get("seq", 0)),
            "ex": msg.get("ex", ""),
        }
    )


def revoked_form(msg: dict[str, Any], revoke: dict[str, Any]) -> dict[str, Any]:
    """The message as everyone sees it once revoked: its content replaced, the record kept beside it."""
    out = {k: v for k, v in msg.items() if k not in ("offline_push", "at_user_id_list", "attached_info")}
    out.update(
        content_type=MSG_REVOKE_NOTIFICATION,
        content=revoked_content(msg, revoke),
        offline_push=None,
        at_user_id_list=[],
        attached_info="",
    )
    out[REVOKE_FIELD] = revoke
    return out


def view_for(msg: dict[str, Any], user_id: str) -> dict[str, Any]:
    """What `user_id` is shown of a stored message: its revoked form once revoked, and status 4
    without content when the user deleted it (OpenIM's handlerDeleteAndRevoked)."""
    revoke = msg.get(REVOKE_FIELD)
    out = revoked_form(msg, revoke) if revoke else msg
    if user_id and user_id in (msg.get(DEL_LIST_FIELD) or []):
        out = {**out, "content": "", "status": MSG_STATUS_DELETED}
    return out


def check_may_revoke(
    msg: dict[str, Any],
    revoker: str,
    admin: bool,
    roles: dict[str, int],
    now_ms: int,
    window_seconds: int,
) -> int:
    """Who may revoke (OpenIM's RevokeMsg rules, plus a time window for senders): an admin token
    always; the sender within `window_seconds` of sending (0: no limit); in a group, its owner any
    message, an admin an ordinary member's. `roles` holds the group roles of the revoker and the
    sender. Returns the revoker's role for the record; raises NO_PERMISSION otherwise."""
    if admin:
        return 0
    session_type = int(msg.get("session_type", 0))
    sender = msg.get("send_id", "")
    if session_type == GROUP_CHAT:
        if revoker not in roles:
            raise ImError(NO_PERMISSION, f"{revoker} is not in the group")
        role = roles[revoker]
        if revoker != sender:
            if role == GROUP_OWNER:
                return role
            if role == GROUP_ADMIN and roles.get(sender, GROUP_ORDINARY) == GROUP_ORDINARY:
                return role
            raise ImError(NO_PERMISSION, "only the sender, the group owner or an admin may revoke this message")
    elif session_type == SINGLE_CHAT:
        role = 0
        if revoker != sender:
            raise ImError(NO_PERMISSION, "only the sender may revoke this message")
    else:
        raise ImError(NO_PERMISSION, f"messages of session type {session_type} cannot be revoked")
    if window_seconds > 0 and now_ms - int(msg.get("send_time", 0)) > window_seconds * 1000:
        raise ImError(NO_PERMISSION, f"a message can be revoked by its sender within {window_seconds} s")
    return role


# --- system messages -----------------------------------------------------------------------------


def new_msg_id(seed: str, now_ms: int) -> str:
    """OpenIM's idutil.GetMsgIDByMD5 idea: unique, 32 hex characters."""
    return hashlib.md5(f"{seed}-{now_ms}-{uuid.uuid4().hex}".encode()).hexdigest()


def system_msg(
    send_id: str,
    recv_id: str,
    group_id: str,
    session_type: int,
    content_type: int,
    content: str,
    options: dict[str, bool],
    now_ms: int,
    operation_id: str,
    sender: tuple[str, str] = ("", ""),
    client_msg_id: str = "",
) -> dict[str, Any]:
    """A message the server sends (msgFrom 200), in the stored shape transfer takes. A fixed
    `client_msg_id` makes sending it again a no-op (the pipeline keeps one seq per clientMsgID)."""
    return {
        "send_id": send_id,
        "recv_id": recv_id if session_type != GROUP_CHAT else "",
        "group_id": group_id if session_type == GROUP_CHAT else "",
        "client_msg_id": client_msg_id or new_msg_id(send_id, now_ms),
        "server_msg_id": new_msg_id(f"s-{send_id}", now_ms),
        "sender_platform_id": 0,
        "sender_nickname": sender[0],
        "sender_face_url": sender[1],
        "session_type": session_type,
        "msg_from": MSG_FROM_SYSTEM,
        "content_type": content_type,
        "content": content,
        "seq": 0,
        "send_time": now_ms,
        "create_time": now_ms,
        "status": MSG_STATUS_SENDING,
        "is_read": False,
        "options": dict(options),
        "offline_push": None,
        "at_user_id_list": [],
        "attached_info": "",
        "ex": "",
        push_frames.OPERATION_ID: operation_id or uuid.uuid4().hex,
    }


def revoke_tips(revoker: str, msg: dict[str, Any], conversation_id: str, now_ms: int, admin: bool) -> dict[str, Any]:
    """OpenIM's RevokeMsgTips (its field name `sesstionType` as spelled there)."""
    return {
        "revokerUserID": revoker,
        "clientMsgID": msg.get("client_msg_id", ""),
        "revokeTime": now_ms,
        "sesstionType": int(msg.get("session_type", 0)),
        "seq": int(msg.get("seq", 0)),
        "conversationID": conversation_id,
        "isAdminRevoke": admin,
    }


def revoke_tips_id(conversation_id: str, seq: int) -> str:
    """The revoke tips' clientMsgID: one per revoked message, so a repeated revoke (or the retry of
    one whose answer was lost) sends it at most once."""
    return hashlib.md5(f"revoke:{conversation_id}:{seq}".encode()).hexdigest()
