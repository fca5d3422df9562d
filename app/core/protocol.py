"""OpenIM's websocket protocol: request codes, envelopes, data codecs, MsgData <-> stored message.

One schema (app/proto/sdkws.proto), three envelope encodings, chosen by the connection's `sdkType`
as OpenIM's gateway chooses them (internal/msggateway: context.go GetSDKType, client.go ResetClient):
  no sdkType, or go  Go gob (app/core/gob.py): GeneralWsReq in, GeneralWsResp out, `Data` the raw
                     protobuf (openim-sdk-core, the core of every official OpenIM app)
  sdkType=js         JSON envelope, `data` base64 of the protobuf (OpenIM's JS SDK)
  sdkType=json       JSON envelope, `data` protobuf's canonical JSON mapping (ours, for humans and scripts)
parse_request / encode_response / best_effort_envelope dispatch on it: the one place that knows the
three. Everything here is pure: bytes and dicts in, bytes and dicts out.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import operator
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from app.core import compact_json, gob
from app.core.constants import MSG_STATUS_DELETED
from app.core.errors import ARGS_ERROR, ImError
from app.proto import sdkws_pb2 as pb

GET_NEWEST_SEQ = 1001
PULL_MSG_BY_RANGE = 1002
SEND_MSG = 1003
SEND_SIGNAL_MSG = 1004
PULL_MSG_BY_SEQ_LIST = 1005
GET_CONV_MAX_READ_SEQ = 1006
PULL_CONV_LAST_MESSAGE = 1007
PUSH_MSG = 2001
KICK_ONLINE_MSG = 2002
LOGOUT_MSG = 2003
SET_BACKGROUND_STATUS = 2004
SUB_USER_ONLINE_STATUS = 2005
DATA_ERROR = 3001

SDK_GO = "go"
SDK_JS = "js"
SDK_JSON = "json"
SDK_TYPES = (SDK_GO, SDK_JS, SDK_JSON)
# What clients may name in `sdkType`: as in OpenIM's gateway, none means "go" (gob), the core SDK's.
SDK_ALIASES = {"": SDK_GO, SDK_GO: SDK_GO, SDK_JS: SDK_JS, SDK_JSON: SDK_JSON}

# OpenIM's gateway decodes ReqIdentifier into an int32 (msggateway Req and Resp)
GO_REQ_IDENTIFIERS = range(-(2**31), 2**31)

MAX_FRAME_BYTES = 51_200
# What a compressed request may inflate to; what the server sends is never inflated by it.
MAX_INFLATED_FRAME_BYTES = MAX_FRAME_BYTES * 4

M = TypeVar("M", bound=Message)

# Each request code's message and its answer's (the data of both, in the connection's encoding).
REQUEST_TYPES: dict[int, type[Message]] = {
    GET_NEWEST_SEQ: pb.GetMaxSeqReq,
    PULL_MSG_BY_RANGE: pb.PullMessageBySeqsReq,
    SEND_MSG: pb.MsgData,
    PULL_MSG_BY_SEQ_LIST: pb.GetSeqMessageReq,
    GET_CONV_MAX_READ_SEQ: pb.GetConversationsHasReadAndMaxSeqReq,
    PULL_CONV_LAST_MESSAGE: pb.GetLastMessageReq,
    SET_BACKGROUND_STATUS: pb.SetAppBackgroundStatusReq,
    SUB_USER_ONLINE_STATUS: pb.SubUserOnlineStatus,
}
RESPONSE_TYPES: dict[int, type[Message]] = {
    GET_NEWEST_SEQ: pb.GetMaxSeqResp,
    PULL_MSG_BY_RANGE: pb.PullMessageBySeqsResp,
    SEND_MSG: pb.UserSendMsgResp,
    PULL_MSG_BY_SEQ_LIST: pb.GetSeqMessageResp,
    GET_CONV_MAX_READ_SEQ: pb.GetConversationsHasReadAndMaxSeqResp,
    PULL_CONV_LAST_MESSAGE: pb.GetLastMessageResp,
    PUSH_MSG: pb.PushMessages,
    SET_BACKGROUND_STATUS: pb.SetAppBackgroundStatusResp,
    SUB_USER_ONLINE_STATUS: pb.SubUserOnlineStatusTips,
}


@dataclass(frozen=True)
class Request:
    req_identifier: int
    send_id: str
    operation_id: str
    msg_incr: str
    token: str
    data: Any


def parse_request(frame: bytes | str, sdk_type: str) -> Request:
    """Decode one request envelope in the connection's encoding (after gunzip); anything malformed
    is an ARGS_ERROR, never an exception leak. For gob, `data` is the raw protobuf bytes."""
    if sdk_type == SDK_GO:
        raw_frame = frame.encode("utf-8") if isinstance(frame, str) else frame
        try:
            req = gob.decode_request(raw_frame)
        except Exception as exc:  # GobError, or anything a hostile frame makes of the decoder: 3001/1001
            raise ImError(ARGS_ERROR, f"request is not a gob GeneralWsReq: {str(exc)[:200]}") from exc
        if req.req_identifier not in GO_REQ_IDENTIFIERS:  # Go's gob refuses it too: OpenIM's is an int32
            raise ImError(ARGS_ERROR, "reqIdentifier out of int32 range")
        return Request(
            req_identifier=req.req_identifier,
            send_id=req.send_id,
            operation_id=req.operation_id,
            msg_incr=req.msg_incr,
            token=req.token,
            data=req.data,
        )
    try:
        raw = compact_json.loads(frame)  # orjson where it reads what the standard library reads
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImError(ARGS_ERROR, "request is not JSON") from exc
    if not isinstance(raw, dict):
        raise ImError(ARGS_ERROR, "request must be a JSON object")
    req_id = raw.get("reqIdentifier")
    if not isinstance(req_id, int) or isinstance(req_id, bool):
        raise ImError(ARGS_ERROR, "reqIdentifier must be an integer")
    fields: dict[str, str] = {}
    for name in ("sendID", "operationID", "msgIncr", "token"):
        value = raw.get(name, "")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ImError(ARGS_ERROR, f"{name} must be a string")
        fields[name] = value
    return Request(
        req_identifier=req_id,
        send_id=fields["sendID"],
        operation_id=fields["operationID"],
        msg_incr=fields["msgIncr"],
        token=fields["token"],
        data=raw.get("data"),
    )


def best_effort_envelope(frame: bytes | str, sdk_type: str) -> dict[str, Any]:
    """reqIdentifier/msgIncr/operationID from a frame that failed, so the error can be correlated."""
    if sdk_type == SDK_GO:
        try:
            raw = frame.encode("utf-8") if isinstance(frame, str) else frame
            req = gob.decode_request(raw, check_range=False)  # refused for its range: still correlated
        except Exception:  # whatever a hostile frame makes of the decoder: no correlation, still an answer
            return {}
        known: dict[str, Any] = {"msgIncr": req.msg_incr, "operationID": req.operation_id}
        if req.req_identifier in GO_REQ_IDENTIFIERS:
            known["reqIdentifier"] = req.req_identifier
        return known
    try:
        raw = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(raw.get("reqIdentifier"), int):
        out["reqIdentifier"] = raw["reqIdentifier"]
    for name in ("msgIncr", "operationID"):
        if isinstance(raw.get(name), str):
            out[name] = raw[name]
    return out


def encode_response(
    req_identifier: int,
    msg_incr: str,
    operation_id: str,
    message: Message | None = None,
    *,
    sdk_type: str,
    err_code: int = 0,
    err_msg: str = "",
) -> bytes:
    """One answer or push in the connection's encoding (before gzip): gob GeneralWsResp, or JSON."""
    if sdk_type == SDK_GO:
        return gob.encode_response(
            gob.GeneralWsResp(
                req_identifier=req_identifier,
                err_code=err_code,
                err_msg=err_msg,
                msg_incr=msg_incr,
                operation_id=operation_id,
                data=message.SerializeToString() if message is not None else b"",
            )
        )
    data = encode_data(sdk_type, message) if message is not None else None
    return encode_json_envelope(req_identifier, msg_incr, operation_id, data, err_code=err_code, err_msg=err_msg)


def encode_json_envelope(
    req_identifier: int, msg_incr: str, operation_id: str, data: Any, *, err_code: int = 0, err_msg: str = ""
) -> bytes:
    """The JSON envelope (js and json) around `data` already in its encoding (encode_data's output)."""
    body = {
        "reqIdentifier": req_identifier,
        "msgIncr": msg_incr,
        "operationID": operation_id,
        "errCode": err_code,
        "errMsg": err_msg,
        "data": data,
    }
    return compact_json.dumps(body)  # two envelopes per delivered message: orjson


def decode_data(sdk_type: str, data: Any, message_cls: type[M]) -> M:
    """The request's `data` as a protobuf message, in the connection's encoding."""
    message = message_cls()
    if data is None or data == "":
        return message
    try:
        if sdk_type == SDK_GO:
            if not isinstance(data, bytes):
                raise ImError(ARGS_ERROR, "data must be protobuf bytes for sdkType=go")
            message.ParseFromString(data)
        elif sdk_type == SDK_JS:
            if not isinstance(data, str):
                raise ImError(ARGS_ERROR, "data must be base64 protobuf for sdkType=js")
            message.ParseFromString(base64.b64decode(data, validate=True))
        else:
            if not isinstance(data, dict):
                raise ImError(ARGS_ERROR, "data must be a JSON object for sdkType=json")
            fast = msgdata_from_plain_json(data) if message_cls is pb.MsgData else None
            if fast is not None:
                return fast  # type: ignore[return-value]  # message_cls is MsgData
            json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except (json_format.ParseError, DecodeError, binascii.Error, ValueError, TypeError) as exc:
        raise ImError(ARGS_ERROR, f"invalid {message_cls.__name__}: {exc}") from exc
    return message


# Every SendMsg of a sdkType=json client is a MsgData object; json_format.ParseDict walks descriptors
# for each field (~7% of the gateway's CPU under load). Objects in the plain shape (each known field
# with the JSON type json_format reads it from, nothing else to interpret) are built directly; any
# other object goes to ParseDict, so what it refuses is refused with its words.
# tests/unit/test_push_json.py checks with hypothesis that both give the same message.
_MSGDATA_STRINGS = frozenset(
    ("sendID", "recvID", "groupID", "clientMsgID", "serverMsgID", "senderNickname", "senderFaceURL")
    + ("attachedInfo", "ex")
)
_MSGDATA_INT32 = frozenset(("senderPlatformID", "sessionType", "msgFrom", "contentType", "status"))
_MSGDATA_INT64 = frozenset(("seq", "sendTime", "createTime"))
_MSGDATA_FIELDS = frozenset(pb.MsgData.DESCRIPTOR.fields_by_name) | frozenset(
    f.json_name for f in pb.MsgData.DESCRIPTOR.fields
)


def msgdata_from_plain_json(data: dict[str, Any]) -> pb.MsgData | None:
    """ParseDict(data, MsgData(), ignore_unknown_fields=True) for a plain object, else None (never raises)."""
    fields: dict[str, Any] = {}
    for name, value in data.items():
        kind = type(value)
        if name in _MSGDATA_STRINGS:
            if kind is not str:
                return None
        elif name in _MSGDATA_INT32:
            if kind is not int:
                return None
        elif name in _MSGDATA_INT64:
            if kind is str:
                digits = value[1:] if value.startswith("-") else value
                if not (digits.isascii() and digits.isdigit()):
                    return None
                value = int(value)  # int64 as JSON strings, the canonical form
            elif kind is not int:
                return None
        elif name == "content":
            if kind is not str or not value.isascii():
                return None
            try:  # json_format's own reading of bytes: either alphabet, padding optional
                value = base64.urlsafe_b64decode(value.encode("ascii") + b"=" * (4 - len(value) % 4))
            except (binascii.Error, ValueError):
                return None
        elif name == "isRead":
            if kind is not bool:
                return None
        elif name == "options":
            if kind is not dict or not all(type(k) is str and type(v) is bool for k, v in value.items()):
                return None
        elif name == "atUserIDList":
            if kind is not list or not all(type(u) is str for u in value):
                return None
        elif name in _MSGDATA_FIELDS or name.startswith("["):
            return None  # offlinePushInfo, or what ParseDict reads as an extension: its own way
        else:
            continue  # unknown fields are ignored, as ParseDict is told to
        fields[name] = value
    try:
        return pb.MsgData(**fields)
    except Exception:  # out of range, unpaired surrogates, ...: ParseDict says how
        return None


def send_msg_resp_json(resp: pb.UserSendMsgResp) -> dict[str, str]:
    """json_format.MessageToDict of a SendMsg answer, keys in its order (fields set, then the rest)."""
    fields = (("serverMsgID", resp.serverMsgID), ("clientMsgID", resp.clientMsgID), ("sendTime", resp.sendTime))
    ordered = [f for f in fields if f[1]] + [f for f in fields if not f[1]]
    return {name: str(value) for name, value in ordered}


def encode_data(sdk_type: str, message: Message) -> Any:
    """A message as an envelope's `data`: raw protobuf (go), base64 protobuf (js), a JSON dict (json)."""
    if sdk_type == SDK_GO:
        return message.SerializeToString()
    if sdk_type == SDK_JS:
        return base64.b64encode(message.SerializeToString()).decode("ascii")
    if type(message) is pb.UserSendMsgResp:  # every SendMsg's answer: built directly, as json_format would
        return send_msg_resp_json(message)
    # Zero values too: a JSON client should see "hasReadSeq": 0, not a missing key.
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def gzip_frame(frame: bytes) -> bytes:
    return gzip.compress(frame, compresslevel=5)


def gunzip_frame(frame: bytes, max_bytes: int = MAX_INFLATED_FRAME_BYTES) -> bytes:
    """Inflate a gzip frame (one or more members) to at most `max_bytes`: a bomb is refused after
    max_bytes + 1 bytes of output, never inflated whole (P7: limits hold after decompression)."""
    out = bytearray()
    rest = frame
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer
        try:
            out += inflater.decompress(rest, max_bytes - len(out) + 1)  # never 0: 0 means unbounded
        except zlib.error as exc:
            raise ImError(ARGS_ERROR, "invalid gzip frame") from exc
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise ImError(ARGS_ERROR, f"frame too large after decompression (at most {max_bytes} bytes)")
        if not inflater.eof:
            raise ImError(ARGS_ERROR, "invalid gzip frame: truncated")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


# --- MsgData <-> the stored message (OpenIM's MsgDataModel bson field names) ---------------------


def msgdata_to_doc(msg: pb.MsgData) -> dict[str, Any]:
    """The stored shape of a message: what the cache, the broker and MongoDB's slots all carry."""
    try:
        content = msg.content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImError(ARGS_ERROR, "content must be UTF-8") from exc
    doc: dict[str, Any] = {
        "send_id": msg.sendID,
        "recv_id": msg.recvID,
        "group_id": msg.groupID,
        "client_msg_id": msg.clientMsgID,
        "server_msg_id": msg.serverMsgID,
        "sender_platform_id": msg.senderPlatformID,
        "sender_nickname": msg.senderNickname,
        "sender_face_url": msg.senderFaceURL,
        "session_type": msg.sessionType,
        "msg_from": msg.msgFrom,
        "content_type": msg.contentType,
        "content": content,
        "seq": msg.seq,
        "send_time": msg.sendTime,
        "create_time": msg.createTime,
        "status": msg.status,
        "is_read": msg.isRead,
        "options": dict(msg.options),
        "offline_push": None,
        "at_user_id_list": list(msg.atUserIDList),
        "attached_info": msg.attachedInfo,
        "ex": msg.ex,
    }
    if msg.HasField("offlinePushInfo"):
        info = msg.offlinePushInfo
        doc["offline_push"] = {
            "title": info.title,
            "desc": info.desc,
            "ex": info.ex,
            "ios_push_sound": info.iOSPushSound,
            "ios_badge_count": info.iOSBadgeCount,
        }
    return doc


def doc_to_msgdata(doc: dict[str, Any]) -> pb.MsgData:
    msg = pb.MsgData(
        sendID=doc.get("send_id", ""),
        recvID=doc.get("recv_id", ""),
        groupID=doc.get("group_id", ""),
        clientMsgID=doc.get("client_msg_id", ""),
        serverMsgID=doc.get("server_msg_id", ""),
        senderPlatformID=int(doc.get("sender_platform_id", 0)),
        senderNickname=doc.get("sender_nickname", ""),
        senderFaceURL=doc.get("sender_face_url", ""),
        sessionType=int(doc.get("session_type", 0)),
        msgFrom=int(doc.get("msg_from", 0)),
        contentType=int(doc.get("content_type", 0)),
        content=str(doc.get("content", "")).encode("utf-8"),
        seq=int(doc.get("seq", 0)),
        sendTime=int(doc.get("send_time", 0)),
        createTime=int(doc.get("create_time", 0)),
        status=int(doc.get("status", 0)),
        isRead=bool(doc.get("is_read", False)),
        options=dict(doc.get("options") or {}),
        atUserIDList=list(doc.get("at_user_id_list") or []),
        attachedInfo=doc.get("attached_info", ""),
        ex=doc.get("ex", ""),
    )
    push = doc.get("offline_push")
    if push:
        msg.offlinePushInfo.CopyFrom(
            pb.OfflinePushInfo(
                title=push.get("title", ""),
                desc=push.get("desc", ""),
                ex=push.get("ex", ""),
                iOSPushSound=push.get("ios_push_sound", ""),
                iOSBadgeCount=bool(push.get("ios_badge_count", False)),
            )
        )
    return msg


# --- MsgData as protobuf's canonical JSON, built straight from the stored message -----------------
# What json_format.MessageToDict(doc_to_msgdata(doc), always_print_fields_with_no_presence=True)
# gives, at a fraction of its cost (it walks descriptors field by field): every push frame of a
# sdkType=json connection carries these. Same keys, same values, same key order (fields set first,
# in field-number order, then the unset ones), and the same inputs refused (the values protobuf's
# own setters refuse), so a push is delivered, or refused, exactly as before.
# tests/unit/test_push_json.py checks all of it against json_format with hypothesis.

INT32 = range(-(2**31), 2**31)
INT64 = range(-(2**63), 2**63)


def _pb_string(value: Any) -> str:
    """A value as protobuf's string setter takes it: None is unset, bytes must be UTF-8."""
    if type(value) is str:
        if not value.isascii():
            value.encode("utf-8")  # lone surrogates are refused, as protobuf refuses them
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return _pb_string(str(value))
    raise TypeError(f"a string field cannot hold {type(value).__name__}")


def _pb_key(value: Any) -> str:
    if value is None:
        raise TypeError("a map key cannot be None")
    return _pb_string(value)


def _pb_int(value: Any, bounds: range) -> int:
    number = int(value)
    if number not in bounds:
        raise ValueError(f"Value out of range: {number}")
    return number


def _pb_bool(value: Any) -> bool:
    """A map<string, bool> value as protobuf's setter takes it: a bool or an integer."""
    return value if type(value) is bool else bool(operator.index(value))


def _set_first(fields: list[tuple[str, Any, bool]]) -> dict[str, Any]:
    out = {name: value for name, value, is_set in fields if is_set}
    for name, value, is_set in fields:
        if not is_set:
            out[name] = value
    return out


def _offline_push_json(push: Any) -> dict[str, Any]:
    title = _pb_string(push.get("title", ""))
    desc = _pb_string(push.get("desc", ""))
    ex = _pb_string(push.get("ex", ""))
    sound = _pb_string(push.get("ios_push_sound", ""))
    badge = bool(push.get("ios_badge_count", False))
    return _set_first(
        [
            ("title", title, title != ""),
            ("desc", desc, desc != ""),
            ("ex", ex, ex != ""),
            ("iOSPushSound", sound, sound != ""),
            ("iOSBadgeCount", badge, badge),
            ("signalInfo", "", False),
        ]
    )


def doc_to_msgdata_json(doc: dict[str, Any]) -> dict[str, Any]:
    """MessageToDict(doc_to_msgdata(doc), always_print_fields_with_no_presence=True), built directly."""
    send_id = _pb_string(doc.get("send_id", ""))
    recv_id = _pb_string(doc.get("recv_id", ""))
    group_id = _pb_string(doc.get("group_id", ""))
    client_msg_id = _pb_string(doc.get("client_msg_id", ""))
    server_msg_id = _pb_string(doc.get("server_msg_id", ""))
    platform = _pb_int(doc.get("sender_platform_id", 0), INT32)
    nickname = _pb_string(doc.get("sender_nickname", ""))
    face_url = _pb_string(doc.get("sender_face_url", ""))
    session_type = _pb_int(doc.get("session_type", 0), INT32)
    msg_from = _pb_int(doc.get("msg_from", 0), INT32)
    content_type = _pb_int(doc.get("content_type", 0), INT32)
    content = str(doc.get("content", "")).encode("utf-8")
    seq = _pb_int(doc.get("seq", 0), INT64)
    send_time = _pb_int(doc.get("send_time", 0), INT64)
    create_time = _pb_int(doc.get("create_time", 0), INT64)
    status = _pb_int(doc.get("status", 0), INT32)
    is_read = bool(doc.get("is_read", False))
    options = {_pb_key(k): _pb_bool(v) for k, v in dict(doc.get("options") or {}).items()}
    at_users = [_pb_key(u) for u in list(doc.get("at_user_id_list") or [])]
    attached = _pb_string(doc.get("attached_info", ""))
    ex = _pb_string(doc.get("ex", ""))
    push = doc.get("offline_push")
    fields: list[tuple[str, Any, bool]] = [
        ("sendID", send_id, send_id != ""),
        ("recvID", recv_id, recv_id != ""),
        ("groupID", group_id, group_id != ""),
        ("clientMsgID", client_msg_id, client_msg_id != ""),
        ("serverMsgID", server_msg_id, server_msg_id != ""),
        ("senderPlatformID", platform, platform != 0),
        ("senderNickname", nickname, nickname != ""),
        ("senderFaceURL", face_url, face_url != ""),
        ("sessionType", session_type, session_type != 0),
        ("msgFrom", msg_from, msg_from != 0),
        ("contentType", content_type, content_type != 0),
        ("content", base64.b64encode(content).decode("ascii"), content != b""),
        ("seq", str(seq), seq != 0),
        ("sendTime", str(send_time), send_time != 0),
        ("createTime", str(create_time), create_time != 0),
        ("status", status, status != 0),
        ("isRead", is_read, is_read),
        ("options", options, bool(options)),
    ]
    if push:  # a message field: printed only when present
        fields.append(("offlinePushInfo", _offline_push_json(push), True))
    fields += [
        ("atUserIDList", at_users, bool(at_users)),
        ("attachedInfo", attached, attached != ""),
        ("ex", ex, ex != ""),
    ]
    return _set_first(fields)


def placeholder_msg(conversation_id: str, seq: int) -> pb.MsgData:
    """A seq that was allocated but never committed pulls as a deleted (status 4) message (P5)."""
    return pb.MsgData(seq=seq, status=MSG_STATUS_DELETED)
