"""Server-side send (OpenIM's /msg/send_msg, /msg/batch_send_msg, /msg/send_business_notification):
an admin sends as any user (msgFrom 200 allowed), through the same batcher and stages as a
websocket SendMsg (app/services/dispatch.py), so the same promises hold. Each send's outcome is kept
by its request's operationID for /msg/check_msg_is_send_success.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from app.config import settings
from app.core import msg_ops, protocol, push_frames, validation
from app.core.constants import (
    BUSINESS_NOTIFICATION,
    CONTENT_TYPE_BEGIN,
    GROUP_CHAT,
    MSG_FROM_SYSTEM,
    MSG_FROM_USER,
    MSG_STATUS_SENDING,
    NOTIFICATION_BEGIN,
    NOTIFICATION_CHAT,
    SEND_STATUS_FAILED,
    SEND_STATUS_NOT_EXIST,
    SEND_STATUS_SUCCESS,
    SINGLE_CHAT,
)
from app.core.errors import ARGS_ERROR, ImError
from app.proto import sdkws_pb2 as pb
from app.services import dispatch
from app.store.redis.client import get_redis
from app.store.redis.keys import SEND_STATUS_TTL_SECONDS, send_status_key
from app.ws import send_hooks
from app.ws.acceptance import Ack

log = logging.getLogger(__name__)

OA_NOTIFICATION = 1400  # OpenIM's OANotification: sent in a notification conversation (sn_)
SESSION_TYPES = (SINGLE_CHAT, GROUP_CHAT, NOTIFICATION_CHAT)
MAX_PLATFORM_ID = 10  # OpenIM's platforms, the admin's included


@dataclass(frozen=True)
class Outgoing:
    """What OpenIM's apistruct.SendMsg carries, checked."""

    send_id: str
    group_id: str
    nickname: str
    face_url: str
    platform_id: int
    content: str
    content_type: int
    session_type: int
    options: dict[str, bool]
    offline_push: dict[str, Any] | None
    ex: str
    msg_from: int


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name) or ""
    if not isinstance(value, str):
        raise ImError(ARGS_ERROR, f"{name} must be a string")
    return value


def _int(body: dict[str, Any], name: str, default: int = 0) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if not validation.is_int(value):
        raise ImError(ARGS_ERROR, f"{name} must be an integer")
    return int(value)


def parse_outgoing(body: dict[str, Any]) -> Outgoing:
    """OpenIM's SendMsg fields: sendID, groupID, senderNickname, senderFaceURL, senderPlatformID,
    content (an object), contentType, sessionType, isOnlineOnly, notOfflinePush, offlinePushInfo,
    ex; and msgFrom (100 or 200, 200 by default as OpenIM's api sends)."""
    send_id = validation.check_user_id(body.get("sendID"), "sendID")
    content_type = _int(body, "contentType")
    session_type = _int(body, "sessionType")
    content = body.get("content")
    if not isinstance(content, dict):
        raise ImError(ARGS_ERROR, "content must be an object")
    if content_type == OA_NOTIFICATION:
        session_type = NOTIFICATION_CHAT
        text = msg_ops.notification_content(content)
    elif CONTENT_TYPE_BEGIN < content_type < NOTIFICATION_BEGIN:
        text = msg_ops.compact(content)
    else:
        raise ImError(ARGS_ERROR, f"contentType {content_type} cannot be sent here (101-999 or 1400)")
    if session_type not in SESSION_TYPES:
        raise ImError(ARGS_ERROR, f"sessionType must be one of {SESSION_TYPES}")
    group_id = _text(body, "groupID")
    if session_type == GROUP_CHAT:
        validation.check_group_id(group_id)
    options: dict[str, bool] = {}
    if body.get("isOnlineOnly") is True:  # OpenIM's SetOptions(options, false): nothing kept, no offline push
        options.update(history=False, persistent=False, offlinePush=False, unreadCount=False)
    if body.get("notOfflinePush") is True:
        options["offlinePush"] = False
    msg_from = _int(body, "msgFrom", MSG_FROM_SYSTEM)
    if msg_from not in (MSG_FROM_USER, MSG_FROM_SYSTEM):
        raise ImError(ARGS_ERROR, f"msgFrom must be {MSG_FROM_USER} or {MSG_FROM_SYSTEM}")
    platform_id = _int(body, "senderPlatformID")
    if not 0 <= platform_id <= MAX_PLATFORM_ID:
        raise ImError(ARGS_ERROR, f"senderPlatformID must be 0 to {MAX_PLATFORM_ID}")
    push = body.get("offlinePushInfo")
    if push is not None and not isinstance(push, dict):
        raise ImError(ARGS_ERROR, "offlinePushInfo must be an object")
    return Outgoing(
        send_id=send_id,
        group_id=group_id if session_type == GROUP_CHAT else "",
        nickname=_text(body, "senderNickname"),
        face_url=_text(body, "senderFaceURL"),
        platform_id=platform_id,
        content=text,
        content_type=content_type,
        session_type=session_type,
        options=options,
        offline_push=push,
        ex=_text(body, "ex"),
        msg_from=msg_from,
    )


def build_doc(out: Outgoing, recv_id: str, now_ms: int, operation_id: str) -> dict[str, Any]:
    """The message for one receiver, checked as a websocket SendMsg is (sizes, ids, options)."""
    if out.session_type != GROUP_CHAT:
        validation.check_user_id(recv_id, "recvID")
    msg = pb.MsgData(
        sendID=out.send_id,
        recvID=recv_id if out.session_type != GROUP_CHAT else "",
        groupID=out.group_id,
        clientMsgID=msg_ops.new_msg_id(out.send_id, now_ms),
        serverMsgID=msg_ops.new_msg_id(f"s-{out.send_id}", now_ms),
        senderPlatformID=out.platform_id,
        senderNickname=out.nickname,
        senderFaceURL=out.face_url,
        sessionType=out.session_type,
        msgFrom=out.msg_from,
        contentType=out.content_type,
        content=out.content.encode("utf-8"),
        sendTime=now_ms,
        createTime=now_ms,
        status=MSG_STATUS_SENDING,
        options=out.options,
        ex=out.ex,
    )
    if out.offline_push:
        try:
            msg.offlinePushInfo.title = str(out.offline_push.get("title", ""))
            msg.offlinePushInfo.desc = str(out.offline_push.get("desc", ""))
            msg.offlinePushInfo.ex = str(out.offline_push.get("ex", ""))
            msg.offlinePushInfo.iOSPushSound = str(out.offline_push.get("iOSPushSound", ""))
            msg.offlinePushInfo.iOSBadgeCount = bool(out.offline_push.get("iOSBadgeCount", False))
        except (TypeError, ValueError) as exc:
            raise ImError(ARGS_ERROR, f"offlinePushInfo: {exc}") from exc
    validation.check_msgdata(msg, settings.max_content_bytes)
    doc = protocol.msgdata_to_doc(msg)
    doc[push_frames.OPERATION_ID] = operation_id
    return doc


def answer(ack: Ack, client_msg_id: str) -> dict[str, Any]:
    """OpenIM's SendMsgResp."""
    return {"serverMsgID": ack.server_msg_id, "clientMsgID": client_msg_id, "sendTime": ack.send_time}


def send(out: Outgoing, recv_id: str, operation_id: str) -> dict[str, Any]:
    doc = build_doc(out, recv_id, int(time.time() * 1000), operation_id)
    try:
        doc = send_hooks.before_send(doc, operation_id)  # OpenIM's before-send webhooks, as for a client
        ack = dispatch.send_one(doc)
    except ImError:
        record_status(operation_id, SEND_STATUS_FAILED)
        raise
    record_status(operation_id, SEND_STATUS_SUCCESS)
    return answer(ack, doc["client_msg_id"])


def batch_send(out: Outgoing, recv_ids: list[str], operation_id: str) -> dict[str, Any]:
    """One message per receiver, handed over in chunks of BATCH_SEND_CHUNK (each chunk accepted
    before the next is built): OpenIM's BatchSendMsgResp {results, failedUserIDs}."""
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    chunk = max(1, settings.batch_send_chunk)
    for start in range(0, len(recv_ids), chunk):
        part = recv_ids[start : start + chunk]
        now_ms = int(time.time() * 1000)
        docs = [build_doc(out, recv_id, now_ms, operation_id) for recv_id in part]
        for recv_id, doc, ack in zip(part, docs, dispatch.send_docs(docs), strict=True):
            if isinstance(ack, ImError):
                failed.append(recv_id)
            else:
                results.append({**answer(ack, doc["client_msg_id"]), "recvID": recv_id})
    record_status(operation_id, SEND_STATUS_FAILED if failed else SEND_STATUS_SUCCESS)
    return {"results": results, "failedUserIDs": failed}


def business_notification(
    send_id: str,
    recv_user: str,
    recv_group: str,
    key: str,
    data: str,
    send_msg: bool,
    reliable: bool,
    operation_id: str,
) -> dict[str, Any]:
    """OpenIM's SendBusinessNotification: a 2001 carrying {key, data}; stored (a seq) when
    reliable, counted unread and shown as a message when `send_msg`."""
    session_type = SINGLE_CHAT if recv_user else GROUP_CHAT
    options = {
        "history": reliable,
        "persistent": reliable,
        "unreadCount": send_msg,
        "offlinePush": False,
        "conversationUpdate": send_msg,
        "senderSync": True,
    }
    now_ms = int(time.time() * 1000)
    detail = {"key": key, "data": data}
    doc = msg_ops.system_msg(
        send_id,
        recv_user,
        recv_group,
        session_type,
        BUSINESS_NOTIFICATION,
        msg_ops.notification_content(detail),
        options,
        now_ms,
        operation_id,
    )
    if len(doc["content"].encode("utf-8")) > settings.max_content_bytes:
        raise ImError(ARGS_ERROR, f"key and data are larger than {settings.max_content_bytes} bytes")
    ack = dispatch.send_one(doc)
    return answer(ack, doc["client_msg_id"])


def record_status(operation_id: str, status: int) -> None:
    if not operation_id:
        return
    try:
        get_redis().set(send_status_key(operation_id), status, ex=SEND_STATUS_TTL_SECONDS)
    except Exception:  # the send itself is done; only the status query loses it
        log.warning("could not record the send status", exc_info=True, extra={"operationID": operation_id})


def send_status(operation_id: str) -> int:
    raw = get_redis().get(send_status_key(operation_id))
    return int(raw) if raw is not None else SEND_STATUS_NOT_EXIST
