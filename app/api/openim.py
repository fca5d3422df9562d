"""OpenIM's user REST API, as far as OpenIM's SDKs need it (see docs/openim-js-sdk.md).

Same paths, headers (`token`, `operationID`) and `{errCode, errMsg, errDlt, data}` envelope as
OpenIM's api service, always HTTP 200. A user's own token authorizes calls about that user; an
admin token authorizes anything. Backed by what this server keeps: `conversation` records, seqs
and read seqs (app/services/history.py), and a small `user` collection (nickname, face). Friends and blacklists
are not kept (yet): their lists are empty, which is what the SDK's sync needs. Groups: app/api/groups.py.

/jssdk/get_active_conversations and /jssdk/get_conversations speak protobuf when the request's
Content-Type says so (the JS SDK does), answering `data` as base64 of the protobuf, as OpenIM does.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any, TypeVar

from flask import Blueprint, Response, request
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from app.api.envelope import (
    MAX_IDS,
    acting_user,
    api_response,
    caller,
    conversation_arg,
    ids_arg,
    int_arg,
    json_body,
)
from app.api.infos import group_infos, users_info
from app.core import recv_opts, validation
from app.core.constants import GROUP_CHAT, MSG_STATUS_DELETED, SINGLE_CHAT
from app.core.conversation import peer_of
from app.core.errors import ARGS_ERROR, NO_PERMISSION, RECORD_NOT_FOUND, ImError
from app.proto import jssdk_pb2 as js
from app.proto import sdkws_pb2 as pb
from app.services import history, profiles
from app.store.mongo import conversations
from app.store.mongo import users as user_store
from app.store.redis import recv_opts as recv_opts_cache

log = logging.getLogger(__name__)

openim_api = Blueprint("openim_api", __name__)

DEFAULT_ACTIVE = 100  # OpenIM's defaultGetActiveConversation / maxGetActiveConversation
MAX_ACTIVE = 500

M = TypeVar("M", bound=Message)


# --- protobuf bodies (the jssdk routes) ---------------------------------------------------------


def is_protobuf_request() -> bool:
    """OpenIM's jssdk rule: JSON when Content-Type is empty or JSON, protobuf when it says so."""
    content_type = request.headers.get("Content-Type", "")
    if not content_type or "application/json" in content_type:
        return False
    if "application/x-protobuf" in content_type or "application/protobuf" in content_type:
        return True
    raise ImError(ARGS_ERROR, "unsupported content type")


def proto_body(message_cls: type[M]) -> M:
    message = message_cls()
    try:
        if is_protobuf_request():
            message.ParseFromString(request.get_data())
        else:
            json_format.ParseDict(json_body(), message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError) as exc:
        raise ImError(ARGS_ERROR, f"invalid {message_cls.__name__}: {exc}") from exc
    return message


def empty_version(**extra: Any) -> dict[str, Any]:
    """An incremental-sync answer for data we do not keep: always the full, empty, version 0."""
    return {"version": 0, "versionID": "", "full": True, "delete": [], "insert": [], "update": [], **extra}


# --- users ------------------------------------------------------------------------------------


@openim_api.post("/user/user_register")
def user_register() -> Response:
    claims = caller()
    if not claims.admin:
        raise ImError(NO_PERMISSION, "an admin token is required")
    users = json_body().get("users")
    if not isinstance(users, list) or not users or len(users) > MAX_IDS:
        raise ImError(ARGS_ERROR, "users must be a non-empty list")
    now = int(time.time() * 1000)
    registered = []
    for user in users:
        if not isinstance(user, dict):
            raise ImError(ARGS_ERROR, "each user must be an object")
        fields = {"nickname": user.get("nickname", ""), "face_url": user.get("faceURL", ""), "ex": user.get("ex", "")}
        if any(not isinstance(v, str) for v in fields.values()):
            raise ImError(ARGS_ERROR, "nickname, faceURL and ex must be strings")
        if len(fields["nickname"]) > validation.MAX_NICKNAME_CHARS:
            raise ImError(ARGS_ERROR, f"nickname is longer than {validation.MAX_NICKNAME_CHARS} characters")
        if len(fields["face_url"]) > validation.MAX_FACE_URL_CHARS:
            raise ImError(ARGS_ERROR, f"faceURL is longer than {validation.MAX_FACE_URL_CHARS} characters")
        if len(fields["ex"]) > validation.MAX_EX_BYTES:
            raise ImError(ARGS_ERROR, f"ex is longer than {validation.MAX_EX_BYTES} characters")
        registered.append((validation.check_user_id(user.get("userID")), fields))
    user_store.register_users(registered, now)
    for user in users:
        profiles.forget(user["userID"])  # senders' nicknames on this node: the new ones at once
    return api_response({})


@openim_api.post("/user/set_global_msg_recv_opt")
def set_global_msg_recv_opt() -> Response:
    """OpenIM's SetGlobalRecvMessageOpt: 0 receive, 1 refuse single-chat messages, 2 receive them
    without offline push (app/core/recv_opts.py); a user sets their own, an admin anyone's."""
    claims, body = caller(), json_body()
    user_id = acting_user(claims, body)
    opt = body.get("globalRecvMsgOpt")
    if opt not in recv_opts.RECV_MSG_OPTS or isinstance(opt, bool):
        raise ImError(ARGS_ERROR, f"globalRecvMsgOpt must be one of {recv_opts.RECV_MSG_OPTS}")
    if not user_store.set_global_recv_msg_opt(user_id, int(opt)):
        raise ImError(RECORD_NOT_FOUND, f"no user {user_id}")
    recv_opts_cache.forget([user_id])
    log.info("user %s set the global receive option %d", user_id, opt)
    return api_response({})


@openim_api.post("/user/get_users_info")
def get_users_info() -> Response:
    caller()
    return api_response({"usersInfo": users_info(ids_arg(json_body(), "userIDs"))})


# --- friends: not kept yet (groups: app/api/groups.py) ----------------------------------------------------------


@openim_api.post("/friend/get_incremental_friends")
def get_incremental_friends() -> Response:
    acting_user(caller(), json_body())
    return api_response(empty_version(sortVersion=0))


@openim_api.post("/friend/get_full_friend_user_ids")
def get_full_friend_user_ids() -> Response:
    acting_user(caller(), json_body())
    return api_response({"version": 0, "versionID": "", "equal": False, "userIDs": []})


@openim_api.post("/friend/get_designated_friends")
def get_designated_friends() -> Response:
    acting_user(caller(), json_body(), "ownerUserID")
    return api_response({"friendsInfo": []})


@openim_api.post("/friend/get_friend_list")
def get_friend_list() -> Response:
    """openim-sdk-core pages through it at login (relation.go's syncer): no friends kept yet."""
    acting_user(caller(), json_body())
    return api_response({"total": 0, "friendsInfo": []})


@openim_api.post("/friend/get_black_list")
def get_black_list() -> Response:
    """openim-sdk-core pages through it at login: no blacklists kept yet."""
    acting_user(caller(), json_body())
    return api_response({"total": 0, "blacks": []})


# --- conversations ------------------------------------------------------------------------------


def conversation_pb(record: dict[str, Any], owner: str, max_seq: int, min_seq: int) -> js.Conversation:
    conv = record["conversation_id"]
    conv_type = int(record.get("conversation_type") or (GROUP_CHAT if conv.startswith("sg_") else SINGLE_CHAT))
    return js.Conversation(
        ownerUserID=owner,
        conversationID=conv,
        recvMsgOpt=int(record.get("recv_msg_opt", 0)),
        conversationType=conv_type,
        userID=peer_of(conv, owner) if conv_type == SINGLE_CHAT else "",
        groupID=conv.removeprefix("sg_") if conv_type == GROUP_CHAT else "",
        isPinned=bool(record.get("is_pinned", False)),
        ex=str(record.get("ex", "")),
        minSeq=min_seq,
        maxSeq=max_seq,
    )


def conversation_msgs(owner: str, records: dict[str, dict[str, Any]], with_empty: bool) -> tuple[list[Any], int]:
    """(ConversationMsg per conversation, newest message first; total unread of these conversations).

    `with_empty` keeps conversations that have no message yet (OpenIM drops them, and the JS SDK
    then fails on a conversation it asked for by id)."""
    convs = sorted(records)
    if not convs:
        return [], 0
    highs = history.user_max_seqs(owner, convs)  # a group's ends where the owner left it
    lows = history.min_seqs(owner, convs)
    reads = history.read_seqs(owner, convs)
    lasts = history.last_msgs(convs, highs, owner)
    peers = {peer_of(c, owner) for c in convs if c.startswith("si_")}
    users = {u["userID"]: u for u in users_info(sorted(peers))}
    group_list = group_infos(c.removeprefix("sg_") for c in convs if c.startswith("sg_"))
    out = []
    unread = 0
    for conv in convs:
        max_seq = highs[conv]
        read_seq = min(reads[conv], max_seq)
        unread += max_seq - read_seq
        last = lasts.get(conv)
        if last is None or last.status >= MSG_STATUS_DELETED:
            last = None
        if last is None and not with_empty:
            continue
        item = js.ConversationMsg(
            conversation=conversation_pb(records[conv], owner, max_seq, lows[conv] if max_seq else 0),
            maxSeq=max_seq,
            readSeq=read_seq,
        )
        if last is not None:
            item.lastMsg = last.SerializeToString()
        if item.conversation.userID in users:
            json_format.ParseDict(users[item.conversation.userID], item.user)
        if item.conversation.groupID in group_list:  # the SDK names a group conversation after it
            json_format.ParseDict(group_list[item.conversation.groupID], item.group)
        out.append((last.sendTime if last is not None else 0, item))
    out.sort(key=lambda pair: -pair[0])
    return [item for _, item in out], unread


def proto_response(message: Message) -> Response:
    """`data` as base64 protobuf for a protobuf request, else as JSON (lastMsg as a MsgData object)."""
    if is_protobuf_request():
        return api_response(base64.b64encode(message.SerializeToString()).decode("ascii"))
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    for item, raw in zip(data.get("conversations", []), getattr(message, "conversations", []), strict=True):
        item["lastMsg"] = json_format.MessageToDict(pb.MsgData.FromString(raw.lastMsg)) if raw.lastMsg else None
    return api_response(data)


@openim_api.post("/jssdk/get_active_conversations")
def get_active_conversations() -> Response:
    owner = caller().user_id
    req = proto_body(js.GetActiveConversationsReq)
    count = req.count if 0 < req.count <= MAX_ACTIVE else DEFAULT_ACTIVE
    items, unread = conversation_msgs(owner, conversations.records_of(owner), with_empty=False)
    return proto_response(js.GetActiveConversationsResp(unreadCount=unread, conversations=items[:count]))


@openim_api.post("/jssdk/get_conversations")
def get_conversations() -> Response:
    owner = caller().user_id
    req = proto_body(js.GetConversationsReq)
    wanted = validation.check_conversation_ids(req.conversationIDs, MAX_IDS)
    records = conversations.records_of(owner, wanted)
    items, unread = conversation_msgs(owner, records, with_empty=True)
    return proto_response(js.GetConversationsResp(unreadCount=unread, conversations=items))


@openim_api.post("/conversation/get_incremental_conversations")
def get_incremental_conversations() -> Response:
    """The JS SDK reads conversations through /jssdk/*; this answers its version check (no version log)."""
    acting_user(caller(), json_body())
    return api_response(empty_version())


INT64_TYPES = {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64}


def go_json(message: Message) -> dict[str, Any]:
    """A flat message as OpenIM's api writes it (Go encoding/json): every field, 64-bit ints as numbers
    (protobuf's JSON mapping quotes them, which the core SDK's encoding/json cannot read into an int64)."""
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    for field in message.DESCRIPTOR.fields:
        if field.cpp_type in INT64_TYPES and field.json_name in data:
            data[field.json_name] = int(data[field.json_name])
    return data


def conversation_dicts(owner: str, records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenIM's `conversation.Conversation` objects (JSON) for these records, sorted by id."""
    convs = sorted(records)
    if not convs:
        return []
    highs = history.user_max_seqs(owner, convs)
    lows = history.min_seqs(owner, convs)
    return [go_json(conversation_pb(records[c], owner, highs[c], lows[c] if highs[c] else 0)) for c in convs]


def pagination_arg(body: dict[str, Any]) -> tuple[int, int | None]:
    """OpenIM's `pagination {pageNumber, showNumber}` (pages from 1) as (offset, limit); none = all."""
    page = body.get("pagination")
    if page is None:
        return 0, None
    if not isinstance(page, dict):
        raise ImError(ARGS_ERROR, "pagination must be an object")
    number = int_arg(page, "pageNumber", 1)
    show = int_arg(page, "showNumber")
    if number < 1 or show < 1:
        raise ImError(ARGS_ERROR, "pagination.pageNumber and showNumber must be positive")
    return (number - 1) * show, show


@openim_api.post("/conversation/get_owner_conversation")
def get_owner_conversation() -> Response:
    """openim-sdk-core's conversation sync at login (conversation_msg.go): the owner's conversations, paged."""
    body = json_body()
    owner = acting_user(caller(), body)
    offset, limit = pagination_arg(body)
    records = conversations.records_of(owner)
    ordered = sorted(records.items())
    page = dict(ordered[offset:] if limit is None else ordered[offset : offset + limit])
    return api_response({"total": len(records), "conversations": conversation_dicts(owner, page)})


@openim_api.post("/conversation/get_all_conversations")
def get_all_conversations() -> Response:
    owner = acting_user(caller(), json_body(), "ownerUserID")
    return api_response({"conversations": conversation_dicts(owner, conversations.records_of(owner))})


@openim_api.post("/conversation/get_conversations")
def get_conversations_json() -> Response:
    """OpenIM's GetConversations (JSON; the JS SDK's protobuf one is /jssdk/get_conversations)."""
    body = json_body()
    owner = acting_user(caller(), body, "ownerUserID")
    asked = body.get("conversationIDs")
    if not isinstance(asked, list):
        raise ImError(ARGS_ERROR, "conversationIDs must be a list")
    wanted = validation.check_conversation_ids(asked, MAX_IDS)
    return api_response({"conversations": conversation_dicts(owner, conversations.records_of(owner, wanted))})


@openim_api.post("/conversation/get_full_conversation_ids")
def get_full_conversation_ids() -> Response:
    """The owner's conversation ids; version 0 (no version log kept), so the SDK always takes the list."""
    owner = acting_user(caller(), json_body())
    ids = sorted(conversations.records_of(owner))
    return api_response({"version": 0, "versionID": "", "equal": False, "conversationIDs": ids})


@openim_api.post("/conversation/get_not_notify_conversation_ids")
def get_not_notify_conversation_ids() -> Response:
    owner = acting_user(caller(), json_body())
    return api_response({"conversationIDs": conversations.not_notify_conversation_ids(owner)})


# --- reading --------------------------------------------------------------------------------------


@openim_api.post("/conversation/set_conversations")
def set_conversations() -> Response:
    """OpenIM's SetConversations, for the setting we keep: `conversation.recvMsgOpt.value` (0 receive
    and notify, 1 do not receive, 2 receive without notification) for each of `userIDs`."""
    claims, body = caller(), json_body()
    user_ids = ids_arg(body, "userIDs")
    if any(u != claims.user_id for u in user_ids) and not claims.admin:
        raise ImError(NO_PERMISSION, "userIDs may only name the token's user")
    conversation = body.get("conversation")
    if not isinstance(conversation, dict):
        raise ImError(ARGS_ERROR, "conversation must be an object")
    conv = conversation_arg(conversation)
    opt = conversation.get("recvMsgOpt")
    if isinstance(opt, dict):
        value = opt.get("value", 0)
        if value not in recv_opts.RECV_MSG_OPTS or isinstance(value, bool):
            raise ImError(ARGS_ERROR, f"recvMsgOpt.value must be one of {recv_opts.RECV_MSG_OPTS}")
        missing = [u for u in user_ids if not conversations.set_recv_msg_opt(u, conv, int(value))]
        recv_opts_cache.forget(user_ids)
        if missing:
            raise ImError(RECORD_NOT_FOUND, f"no conversation {conv} for {missing[0]}")
    return api_response({})
