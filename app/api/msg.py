"""OpenIM's /msg/* REST routes for the message operations: revoke, delete, clear, read state and
server-side send. Same paths, bodies, answers and error codes as OpenIM's api service; the logic is
in app/services (revoke, deletion, read_state, server_send), which hand every notification and
every sent message to the pipeline through the node's batcher (app/services/dispatch.py).

Who may call what: a user's own token acts for that user only (`userID` must be the token's);
an admin token acts for anyone. Revoke: the sender within REVOKE_WINDOW_SECONDS, a group's owner or
admin, or an admin token. Delete and clear: only for oneself (their "for everyone" options and the
physical deletes need an admin token). Sending as any user: admin token only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, request

from app.api.envelope import (
    MAX_IDS,
    acting_user,
    api_response,
    caller,
    conversation_arg,
    int_arg,
    json_body,
)
from app.config import settings
from app.core import validation
from app.core.constants import GROUP_CHAT, SINGLE_CHAT
from app.core.errors import ARGS_ERROR, NO_PERMISSION, ImError
from app.ops import metrics
from app.proto import sdkws_pb2 as pb
from app.services import deletion, history, read_state, revoke, server_send
from app.services.auth import TokenClaims
from app.store.mongo import conversations

log = logging.getLogger(__name__)

msg_api = Blueprint("msg_api", __name__)

F = TypeVar("F", bound=Callable[..., Response])


def operation(name: str) -> Callable[[F], F]:
    """Count the route's calls by outcome and log each with its operationID."""

    def wrap(route: F) -> F:
        @wraps(route)
        def counted(*args: Any, **kwargs: Any) -> Response:
            op_id = request.headers.get("operationID", "")
            try:
                answer = route(*args, **kwargs)
            except ImError as err:
                metrics.MSG_OPERATIONS.labels(operation=name, outcome="refused").inc()
                log.info("%s refused (%d): %s", name, err.code, err.message, extra={"operationID": op_id})
                raise
            except Exception:
                metrics.MSG_OPERATIONS.labels(operation=name, outcome="failed").inc()
                raise
            metrics.MSG_OPERATIONS.labels(operation=name, outcome="ok").inc()
            log.info("%s done", name, extra={"operationID": op_id})
            return answer

        return counted  # type: ignore[return-value]

    return wrap


def operation_id() -> str:
    return validation.check_operation_id(request.headers.get("operationID", ""))


def seqs_arg(body: dict[str, Any], name: str = "seqs", limit: int = validation.MAX_SEQ_LIST) -> list[int]:
    """A list of positive seqs (int64 may come as strings), order kept."""
    value = body.get(name) or []
    if not isinstance(value, list) or len(value) > limit:
        raise ImError(ARGS_ERROR, f"{name} must be a list of at most {limit} seqs")
    seqs = [int_arg({"seq": s}, "seq") for s in value]
    if any(s <= 0 for s in seqs):
        raise ImError(ARGS_ERROR, f"{name} must hold positive seqs")
    return seqs


def sync_opt(body: dict[str, Any]) -> tuple[bool, bool]:
    """OpenIM's DeleteSyncOpt {IsSyncSelf, IsSyncOther} (any letter case, as Go's encoding/json
    reads it). Without it, the caller's other devices are told (isSyncSelf) and nobody else."""
    opt = body.get("deleteSyncOpt")
    if opt is None:
        return True, False
    if not isinstance(opt, dict):
        raise ImError(ARGS_ERROR, "deleteSyncOpt must be an object")
    lowered = {str(k).lower(): v for k, v in opt.items()}
    return lowered.get("issyncself") is True, lowered.get("issyncother") is True


def admin_only(claims: TokenClaims, what: str) -> None:
    if not claims.admin:
        raise ImError(NO_PERMISSION, f"{what} needs an admin token")


# --- revoke ------------------------------------------------------------------------------------


@msg_api.post("/msg/revoke_msg")
@operation("revoke")
def revoke_msg() -> Response:
    """OpenIM's RevokeMsg {conversationID, seq, userID}; revoking twice answers success."""
    claims, body = caller(), json_body()
    revoker = acting_user(claims, body)
    conv = conversation_arg(body)
    seq = int_arg(body, "seq")
    if seq <= 0:
        raise ImError(ARGS_ERROR, "seq must be positive")
    revoke.revoke(revoker, claims.admin, conv, seq, operation_id())
    return api_response({})


# --- delete and clear ----------------------------------------------------------------------------


@msg_api.post("/msg/delete_msgs")
@operation("delete")
def delete_msgs() -> Response:
    """OpenIM's DeleteMsgs {conversationID, seqs, userID, deleteSyncOpt}: for the caller only,
    unless an admin asks for everyone (isSyncOther: a physical delete)."""
    claims, body = caller(), json_body()
    user_id = acting_user(claims, body)
    conv = conversation_arg(body)
    seqs = seqs_arg(body)
    sync_self, sync_other = sync_opt(body)
    if sync_other:
        admin_only(claims, "deleting for everyone")
        deletion.delete_physically(conv, seqs)
    else:
        deletion.delete_for_me(user_id, conv, seqs, sync_self, operation_id())
    return api_response({})


@msg_api.post("/msg/clear_conversation_msg")
@operation("clear")
def clear_conversation_msg() -> Response:
    """OpenIM's ClearConversationsMsg {conversationIDs, userID, deleteSyncOpt}."""
    claims, body = caller(), json_body()
    user_id = acting_user(claims, body)
    asked = body.get("conversationIDs")
    if not isinstance(asked, list) or not asked:
        raise ImError(ARGS_ERROR, "conversationIDs must be a non-empty list")
    convs = validation.check_conversation_ids(asked, MAX_IDS)
    sync_self, sync_other = sync_opt(body)
    if sync_other:
        admin_only(claims, "clearing for everyone")
        for conv in convs:
            deletion.delete_before(conv, int(time.time() * 1000) + 1)
    deletion.clear_for_me(user_id, convs, sync_self, operation_id())
    return api_response({})


@msg_api.post("/msg/user_clear_all_msg")
@operation("clear_all")
def user_clear_all_msg() -> Response:
    """OpenIM's UserClearAllMsg {userID, deleteSyncOpt}: every conversation of the user, for them."""
    claims, body = caller(), json_body()
    user_id = acting_user(claims, body)
    sync_self, sync_other = sync_opt(body)
    if sync_other:
        raise ImError(NO_PERMISSION, "clearing all of a user's conversations for everyone is not offered")
    deletion.clear_for_me(user_id, None, sync_self, operation_id())
    return api_response({})


@msg_api.post("/msg/delete_msg_phsical_by_seq")  # OpenIM's spelling
@operation("delete_physical_by_seq")
def delete_msg_physical_by_seq() -> Response:
    """OpenIM's DeleteMsgPhysicalBySeq {conversationID, seqs} (admin): gone for everyone."""
    claims, body = caller(), json_body()
    admin_only(claims, "a physical delete")
    deletion.delete_physically(conversation_arg(body), seqs_arg(body))
    return api_response({})


@msg_api.post("/msg/delete_msg_physical")
@operation("delete_physical")
def delete_msg_physical() -> Response:
    """OpenIM's DeleteMsgPhysical {conversationIDs, timestamp} (admin): in each conversation, the
    messages sent more than `timestamp` seconds ago are gone for everyone (OpenIM reads it so:
    now minus timestamp is the cut-off)."""
    claims, body = caller(), json_body()
    admin_only(claims, "a physical delete")
    asked = body.get("conversationIDs")
    if not isinstance(asked, list) or not asked:
        raise ImError(ARGS_ERROR, "conversationIDs must be a non-empty list")
    convs = validation.check_conversation_ids(asked, MAX_IDS)
    seconds = int_arg(body, "timestamp")
    if seconds < 0:
        raise ImError(ARGS_ERROR, "timestamp must not be negative")
    cut_ms = int((time.time() - seconds) * 1000)
    for conv in convs:
        deletion.delete_before(conv, cut_ms)
    return api_response({})


# --- read state ---------------------------------------------------------------------------------


def reader_and_conversation() -> tuple[str, str, dict[str, Any]]:
    body = json_body()
    reader = acting_user(caller(), body)
    conv = conversation_arg(body)
    history.check_members(reader, [conv])
    return reader, conv, body


@msg_api.post("/msg/mark_conversation_as_read")
@operation("mark_conversation_as_read")
def mark_conversation_as_read() -> Response:
    """OpenIM's MarkConversationAsRead {conversationID, userID, hasReadSeq, seqs}: the read seq
    moves to hasReadSeq (forward only, never past the max); a single chat's peer gets a 2200
    naming the seqs read, a group's reader a 2200 on its other devices."""
    reader, conv, body = reader_and_conversation()
    wanted = int_arg(body, "hasReadSeq")
    seqs = seqs_arg(body, limit=MAX_IDS)
    read_state.mark_conversation_as_read(reader, conv, wanted, seqs, operation_id())
    return api_response({})


@msg_api.post("/msg/mark_msgs_as_read")
@operation("mark_msgs_as_read")
def mark_msgs_as_read() -> Response:
    """OpenIM's MarkMsgsAsRead {conversationID, seqs, userID}: the read seq moves to the last seq."""
    reader, conv, body = reader_and_conversation()
    read_state.mark_msgs_as_read(reader, conv, seqs_arg(body, limit=MAX_IDS), operation_id())
    return api_response({})


@msg_api.post("/msg/set_conversation_has_read_seq")
@operation("set_conversation_has_read_seq")
def set_conversation_has_read_seq() -> Response:
    """OpenIM's SetConversationHasReadSeq {conversationID, userID, hasReadSeq, noNotification}."""
    reader, conv, body = reader_and_conversation()
    notify = body.get("noNotification") is not True
    read_state.set_has_read_seq(reader, conv, int_arg(body, "hasReadSeq"), notify, operation_id())
    return api_response({})


@msg_api.post("/msg/get_conversations_has_read_and_max_seq")
@operation("get_conversations_has_read_and_max_seq")
def get_conversations_has_read_and_max_seq() -> Response:
    """OpenIM's GetConversationsHasReadAndMaxSeq {userID, conversationIDs, returnPinned}:
    `seqs` per conversation {maxSeq, hasReadSeq, maxSeqTime} (all of the user's when none named)."""
    claims, body = caller(), json_body()
    user_id = acting_user(claims, body)
    asked = body.get("conversationIDs") or []
    if not isinstance(asked, list):
        raise ImError(ARGS_ERROR, "conversationIDs must be a list")
    req = pb.GetConversationsHasReadAndMaxSeqReq(
        userID=user_id, conversationIDs=validation.check_conversation_ids(asked, MAX_IDS)
    )
    resp = history.has_read_and_max(user_id, req)
    seqs = {
        conv: {"maxSeq": e.maxSeq, "hasReadSeq": e.hasReadSeq, "maxSeqTime": e.maxSeqTime}
        for conv, e in resp.seqs.items()
    }
    answer: dict[str, Any] = {"seqs": seqs}
    if body.get("returnPinned") is True:
        records = conversations.records_of(user_id)
        answer["pinnedConversationIDs"] = sorted(c for c, r in records.items() if r.get("is_pinned"))
    return api_response(answer)


# --- server-side send ---------------------------------------------------------------------------


@msg_api.post("/msg/send_msg")
@operation("send_msg")
def send_msg() -> Response:
    """OpenIM's SendMsg (apistruct.SendMsgReq: recvID and the SendMsg fields), admin token only."""
    claims, body = caller(), json_body()
    admin_only(claims, "sending as another user")
    out = server_send.parse_outgoing(body)
    recv_id = body.get("recvID") or ""
    if out.session_type != GROUP_CHAT and not recv_id:
        raise ImError(ARGS_ERROR, "recvID is required for a single chat or notification")
    return api_response(server_send.send(out, recv_id, operation_id()))


@msg_api.post("/msg/batch_send_msg")
@operation("batch_send_msg")
def batch_send_msg() -> Response:
    """OpenIM's BatchSendMsg {SendMsg fields, recvIDs} (admin): one message per receiver, single
    chats; answered {results, failedUserIDs}. isSendAll (every registered user) is not offered."""
    claims, body = caller(), json_body()
    admin_only(claims, "sending as another user")
    if body.get("isSendAll") is True:
        raise ImError(ARGS_ERROR, "isSendAll is not supported: name the receivers in recvIDs")
    out = server_send.parse_outgoing({**body, "sessionType": body.get("sessionType") or SINGLE_CHAT})
    if out.session_type == GROUP_CHAT:
        raise ImError(ARGS_ERROR, "batch_send_msg sends to users (sessionType 1 or 4)")
    recv_ids = body.get("recvIDs")
    limit = settings.batch_send_max_receivers
    if not isinstance(recv_ids, list) or not recv_ids or len(recv_ids) > limit:
        raise ImError(ARGS_ERROR, f"recvIDs must be a list of 1 to {limit} user ids")
    receivers = validation.check_user_ids(recv_ids, "recvIDs", limit)
    return api_response(server_send.batch_send(out, receivers, operation_id()))


@msg_api.post("/msg/send_business_notification")
@operation("send_business_notification")
def send_business_notification() -> Response:
    """OpenIM's SendBusinessNotification {key, data, sendUserID, recvUserID | recvGroupID, sendMsg,
    reliabilityLevel} (admin)."""
    claims, body = caller(), json_body()
    admin_only(claims, "a business notification")
    send_id = validation.check_user_id(body.get("sendUserID"), "sendUserID")
    recv_user, recv_group = body.get("recvUserID") or "", body.get("recvGroupID") or ""
    if bool(recv_user) == bool(recv_group):
        raise ImError(ARGS_ERROR, "exactly one of recvUserID and recvGroupID must be set")
    if recv_user:
        validation.check_user_id(recv_user, "recvUserID")
    else:
        validation.check_group_id(recv_group, "recvGroupID")
    key, data = body.get("key") or "", body.get("data") or ""
    if not isinstance(key, str) or not isinstance(data, str):
        raise ImError(ARGS_ERROR, "key and data must be strings")
    level = body.get("reliabilityLevel")
    level = 1 if level is None else level
    if not validation.is_int(level):
        raise ImError(ARGS_ERROR, "reliabilityLevel must be an integer")
    answer = server_send.business_notification(
        send_id, recv_user, recv_group, key, data, body.get("sendMsg") is True, level == 2, operation_id()
    )
    return api_response(answer)


@msg_api.post("/msg/check_msg_is_send_success")
@operation("check_msg_is_send_success")
def check_msg_is_send_success() -> Response:
    """OpenIM's GetSendMsgStatus: the status of the server send made with this operationID
    (0 unknown, 2 sent, 3 failed)."""
    caller()
    return api_response({"status": server_send.send_status(operation_id())})


@msg_api.post("/msg/get_server_time")
def get_server_time() -> Response:
    """OpenIM's GetServerTime: milliseconds since the epoch (no token needed, as OpenIM's whitelist)."""
    return api_response({"serverTime": int(time.time() * 1000)})
