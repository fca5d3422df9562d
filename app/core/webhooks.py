"""OpenIM's webhooks (callbacks) for the message flow, as pure functions: the configuration (OpenIM's
webhooks.yml shape), each callback's request body, how an answer refuses or modifies, and which
messages a callback sees. The HTTP calls are in app/pipeline/webhooks.py.

A callback is POSTed to `<url>/<callbackCommand>` with the `operationID` header. An answer with
`actionCode` 0 and `nextCode` 1 stops what was about to happen, with the answer's errCode and errMsg
(OpenIM's CommonCallbackResp.Parse); any other answer lets it go on. An endpoint that fails (a
timeout, a connection error, a non-2xx status, a body that is not JSON) stops it too, unless the
callback's `failedContinue` says to go on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from app.core.constants import GROUP_CHAT, NOTIFICATION_BEGIN, NOTIFICATION_END, TYPING

# Our name (OpenIM's key in webhooks.yml) -> OpenIM's callbackCommand (the URL's last part).
COMMANDS: dict[str, str] = {
    "beforeSendSingleMsg": "callbackBeforeSendSingleMsgCommand",
    "beforeSendGroupMsg": "callbackBeforeSendGroupMsgCommand",
    "beforeMsgModify": "callbackBeforeMsgModifyCommand",
    "afterSendSingleMsg": "callbackAfterSendSingleMsgCommand",
    "afterSendGroupMsg": "callbackAfterSendGroupMsgCommand",
    "afterMsgSaveDB": "callbackAfterMsgSaveDBCommand",
    "beforeOnlinePush": "callbackBeforeOnlinePushCommand",
    "beforeGroupOnlinePush": "callbackBeforeGroupOnlinePushCommand",
    "beforeOfflinePush": "callbackBeforeOfflinePushCommand",
    "afterUserOnline": "callbackAfterUserOnlineCommand",
    "afterUserOffline": "callbackAfterUserOfflineCommand",
    "afterRevokeMsg": "callbackBeforeAfterMsgCommand",  # sic: OpenIM's own spelling of this command
}
BEFORE = frozenset(name for name in COMMANDS if name.startswith("before"))

PLATFORM_NAMES = {
    1: "IOS",
    2: "Android",
    3: "Windows",
    4: "OSX",
    5: "Web",
    6: "MiniWeb",
    7: "Linux",
    8: "AndroidPad",
    9: "IPad",
    10: "Admin",
}

# beforeMsgModify may change these fields of a message (OpenIM's CallbackMsgModifyCommandResp). The
# fields that route a message (recvID, groupID, sessionType) and identify it (clientMsgID,
# serverMsgID, msgFrom, senderPlatformID) stay: the sender's right to the conversation was checked.
MODIFIABLE = {
    "content": "content",
    "contentType": "content_type",
    "senderNickname": "sender_nickname",
    "senderFaceURL": "sender_face_url",
    "status": "status",
    "options": "options",
    "atUserIDList": "at_user_id_list",
    "attachedInfo": "attached_info",
    "ex": "ex",
}


# On a message in the push stage: the users a beforeGroupOnlinePush answer named (they replace the
# group's members as its recipients).
PUSH_TO_FIELD = "push_to_user_ids"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class CallbackConfig:
    enable: bool = False
    timeout: float = 5.0
    failed_continue: bool = True
    denied_types: frozenset[int] = frozenset()
    attention_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WebhooksConfig:
    url: str = ""
    callbacks: Mapping[str, CallbackConfig] = field(default_factory=dict)

    def enabled(self, name: str) -> CallbackConfig | None:
        cfg = self.callbacks.get(name)
        return cfg if cfg is not None and cfg.enable and self.url else None

    @cached_property
    def _enabled_names(self) -> frozenset[str]:
        return frozenset(name for name in self.callbacks if self.enabled(name)) if self.url else frozenset()

    def any_enabled(self, *names: str) -> bool:
        """Asked for every message the gateway accepts: a set lookup."""
        return not self._enabled_names.isdisjoint(names)


def parse_config(data: Mapping[str, Any], url: str = "") -> WebhooksConfig:
    """OpenIM's webhooks.yml as a mapping (`url`, then one entry per callback); `url` given here wins.
    Callbacks we do not run are ignored; a malformed entry of one we run raises ConfigError."""
    callbacks: dict[str, CallbackConfig] = {}
    for name in COMMANDS:
        entry = data.get(name)
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            raise ConfigError(f"webhooks: {name} must be a mapping")
        timeout = entry.get("timeout", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
            raise ConfigError(f"webhooks: {name}.timeout must be seconds between 0 and 60")
        denied = entry.get("deniedTypes") or []
        attention = entry.get("attentionIds") or []
        if not isinstance(denied, list) or not all(isinstance(t, int) for t in denied):
            raise ConfigError(f"webhooks: {name}.deniedTypes must be a list of content types")
        if not isinstance(attention, list) or not all(isinstance(a, str) for a in attention):
            raise ConfigError(f"webhooks: {name}.attentionIds must be a list of ids")
        callbacks[name] = CallbackConfig(
            enable=bool(entry.get("enable", False)),
            timeout=float(timeout),
            failed_continue=bool(entry.get("failedContinue", True)),
            denied_types=frozenset(denied),
            attention_ids=frozenset(attention),
        )
    base = url or str(data.get("url") or "")
    return WebhooksConfig(url=base.rstrip("/"), callbacks=callbacks)


def config_from_names(url: str, names: str, timeout: float, failed_continue: bool) -> WebhooksConfig:
    """The simple form: a comma-separated list of callbacks to enable, all with one timeout."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in COMMANDS]
    if unknown:
        raise ConfigError(f"WEBHOOKS_ENABLED names unknown callbacks {unknown}; known: {sorted(COMMANDS)}")
    entry = {"enable": True, "timeout": timeout, "failedContinue": failed_continue}
    return parse_config(dict.fromkeys(wanted, entry), url)


# --- who sees what --------------------------------------------------------------------------------


def sees(cfg: CallbackConfig, msg: Mapping[str, Any]) -> bool:
    """Typing never; a content type in deniedTypes never; with attentionIds, only messages to those
    users or groups (OpenIM's filterMsg)."""
    content_type = int(msg.get("content_type", 0))
    if content_type == TYPING or content_type in cfg.denied_types:
        return False
    if cfg.attention_ids:
        target = msg.get("group_id") if msg.get("session_type") == GROUP_CHAT else msg.get("recv_id")
        return target in cfg.attention_ids
    return True


# --- request bodies ---------------------------------------------------------------------------------


def content_text(msg: Mapping[str, Any]) -> str:
    """What OpenIM's GetContent gives: the text, or a notification's `detail`."""
    content = msg.get("content") or ""
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    if NOTIFICATION_BEGIN <= int(msg.get("content_type", 0)) <= NOTIFICATION_END:
        try:
            parsed = json.loads(content)
        except (ValueError, RecursionError):
            return ""
        return str(parsed.get("detail", "")) if isinstance(parsed, dict) else ""
    return str(content)


def message_body(name: str, msg: Mapping[str, Any], operation_id: str) -> dict[str, Any]:
    """OpenIM's CommonCallbackReq for one message, with recvID or groupID as the callback has them."""
    body: dict[str, Any] = {
        "callbackCommand": COMMANDS[name],
        "operationID": operation_id,
        "sendID": msg.get("send_id", ""),
        "serverMsgID": msg.get("server_msg_id", ""),
        "clientMsgID": msg.get("client_msg_id", ""),
        "senderPlatformID": int(msg.get("sender_platform_id", 0)),
        "senderNickname": msg.get("sender_nickname", ""),
        "sessionType": int(msg.get("session_type", 0)),
        "msgFrom": int(msg.get("msg_from", 0)),
        "contentType": int(msg.get("content_type", 0)),
        "status": int(msg.get("status", 0)),
        "sendTime": int(msg.get("send_time", 0)),
        "createTime": int(msg.get("create_time", 0)),
        "content": content_text(msg),
        "seq": int(msg.get("seq", 0)),
        "atUserList": list(msg.get("at_user_id_list") or []),
        "faceURL": msg.get("sender_face_url", ""),
        "ex": msg.get("ex", ""),
    }
    if name in ("beforeSendSingleMsg", "afterSendSingleMsg", "afterMsgSaveDB"):
        body["recvID"] = msg.get("recv_id", "")
    if name in ("beforeSendGroupMsg", "afterSendGroupMsg", "afterMsgSaveDB"):
        body["groupID"] = msg.get("group_id", "")
    return body


def push_body(name: str, msg: Mapping[str, Any], user_ids: list[str], operation_id: str) -> dict[str, Any]:
    """OpenIM's CallbackBeforePushReq (beforeOnlinePush, beforeOfflinePush) and
    CallbackBeforeSuperGroupOnlinePushReq (beforeGroupOnlinePush)."""
    platform = int(msg.get("sender_platform_id", 0))
    body: dict[str, Any] = {
        "callbackCommand": COMMANDS[name],
        "operationID": operation_id,
        "platformID": platform,
        "platform": PLATFORM_NAMES.get(platform, ""),
        "clientMsgID": msg.get("client_msg_id", ""),
        "sendID": msg.get("send_id", ""),
        "groupID": msg.get("group_id", ""),
        "contentType": int(msg.get("content_type", 0)),
        "sessionType": int(msg.get("session_type", 0)),
        "atUserIDList": list(msg.get("at_user_id_list") or []),
        "content": content_text(msg),
    }
    if name == "beforeGroupOnlinePush":
        body["seq"] = int(msg.get("seq", 0))
    else:
        body["userIDList"] = list(user_ids)
    if name == "beforeOfflinePush":
        push = msg.get("offline_push") or {}
        body.update(
            {
                "title": push.get("title", ""),
                "desc": push.get("desc", ""),
                "ex": push.get("ex", ""),
                "iOSPushSound": push.get("ios_push_sound", ""),
                "iOSBadgeCount": bool(push.get("ios_badge_count", False)),
            }
        )
    return body


def user_status_body(
    name: str, user_id: str, platform_id: int, conn_id: str, background: bool, operation_id: str
) -> dict[str, Any]:
    """OpenIM's CallbackUserOnlineReq / CallbackUserOfflineReq."""
    body: dict[str, Any] = {
        "callbackCommand": COMMANDS[name],
        "operationID": operation_id,
        "platformID": platform_id,
        "platform": PLATFORM_NAMES.get(platform_id, ""),
        "userID": user_id,
        "seq": 0,
        "connID": conn_id,
    }
    if name == "afterUserOnline":
        body["isAppBackground"] = background
    return body


def revoke_body(conversation_id: str, seq: int, user_id: str, operation_id: str) -> dict[str, Any]:
    return {
        "callbackCommand": COMMANDS["afterRevokeMsg"],
        "operationID": operation_id,
        "conversationID": conversation_id,
        "seq": seq,
        "userID": user_id,
    }


# --- answers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    err_code: int
    err_msg: str


def refusal(answer: Mapping[str, Any]) -> Refusal | None:
    """actionCode 0 with nextCode 1: stop, with the answer's errCode (OpenIM's Parse)."""
    if _int(answer.get("actionCode")) == 0 and _int(answer.get("nextCode")) == 1:
        code = _int(answer.get("errCode")) or 0
        return Refusal(code, str(answer.get("errMsg") or "refused by a webhook"))
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def modified(msg: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """The message as beforeMsgModify's answer changes it; raises ValueError for a change we refuse
    (content that is not JSON, a field of the wrong type)."""
    out = dict(msg)
    for wire, ours in MODIFIABLE.items():
        if answer.get(wire) is None:
            continue
        value = answer[wire]
        if wire == "content":
            if not isinstance(value, str):
                raise ValueError("content must be a string")
            try:
                json.loads(value)
            except ValueError as exc:
                raise ValueError("webhook msg modify content is not json") from exc
        elif wire in ("contentType", "status"):
            if _int(value) is None:
                raise ValueError(f"{wire} must be an integer")
        elif wire == "options":
            if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
                raise ValueError("options must map names to booleans")
            value = dict(value)
        elif wire == "atUserIDList":
            if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
                raise ValueError("atUserIDList must be a list of user ids")
            value = list(value)
        elif not isinstance(value, str):
            raise ValueError(f"{wire} must be a string")
        out[ours] = value
    push = answer.get("offlinePushInfo")
    if isinstance(push, dict):
        out["offline_push"] = offline_push_info(push)
    return out


def offline_push_info(push: Mapping[str, Any]) -> dict[str, Any]:
    """OpenIM's OfflinePushInfo JSON in our message's shape."""
    return {
        "title": str(push.get("title") or ""),
        "desc": str(push.get("desc") or ""),
        "ex": str(push.get("ex") or ""),
        "ios_push_sound": str(push.get("iOSPushSound") or ""),
        "ios_badge_count": bool(push.get("iOSBadgeCount", False)),
    }


def user_ids_answer(answer: Mapping[str, Any]) -> list[str] | None:
    """A before-push answer's `userIDList`, when it names users (then they replace the recipients)."""
    users = answer.get("userIDList")
    if isinstance(users, list) and users and all(isinstance(u, str) for u in users):
        return list(users)
    return None
