"""How one routed delivery of a conversation's messages becomes 2001 PushMsg payloads, as OpenIM writes them.

- Each payload carries the `operationID` of the request that produced its messages (the SendMsg,
  or the REST call behind a notification). OpenIM's SDKs learn the seq of their own message from
  its push back to them and recognise that echo by this operationID (docs/openim-js-sdk.md), so
  messages of different operations never share a payload.
- Server notifications (system-sent, content types 1000-4999, such as read receipts) go in
  `notificationMsgs` under OpenIM's `n_` conversation id; everything else in `msgs`.
- Group notifications (1500-1599, and a group's revoke tips and business notifications) are kept
  in the group's own conversation here (OpenIM's "isSendMsg" copy), so they go in `msgs` with its
  seqs; the same message also goes in `notificationMsgs` under `n_<groupID>`, where OpenIM's SDKs
  act on it (their group and member caches, group events, revokes). The SDKs keep no seq state
  for what arrives there (docs/openim-js-sdk.md).

Pure: stored message dicts in, (operationID, PushMessages) pairs, or their frames, out, in the
messages' order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from app.core import protocol
from app.core.constants import (
    BUSINESS_NOTIFICATION,
    GROUP_CHAT,
    GROUP_NOTIFICATION_BEGIN,
    GROUP_NOTIFICATION_END,
    MSG_FROM_SYSTEM,
    MSG_REVOKE_NOTIFICATION,
    NOTIFICATION_BEGIN,
    NOTIFICATION_END,
)
from app.core.protocol import doc_to_msgdata, doc_to_msgdata_json
from app.proto import sdkws_pb2 as pb

OPERATION_ID = "operation_id"  # the stored message's field holding its request's operationID


def is_notification(msg: dict[str, Any]) -> bool:
    """Group notifications are kept in the group's own conversation here (OpenIM's isSendMsg copy),
    so they travel with its messages."""
    return bool(
        msg.get("msg_from") == MSG_FROM_SYSTEM
        and msg.get("session_type") != GROUP_CHAT
        and NOTIFICATION_BEGIN <= int(msg.get("content_type", 0)) < NOTIFICATION_END
    )


# Stored notifications of a group's message operations (revoke tips, business notifications):
# like group notifications, the SDKs act on them only from `notificationMsgs`.
GROUP_CONVERSATION_NOTIFICATIONS = frozenset({MSG_REVOKE_NOTIFICATION, BUSINESS_NOTIFICATION})


def is_group_notification(msg: dict[str, Any]) -> bool:
    content_type = int(msg.get("content_type", 0))
    return bool(
        msg.get("msg_from") == MSG_FROM_SYSTEM
        and msg.get("session_type") == GROUP_CHAT
        and (
            GROUP_NOTIFICATION_BEGIN < content_type < GROUP_NOTIFICATION_END
            or content_type in GROUP_CONVERSATION_NOTIFICATIONS
        )
    )


def notification_conversation_id(msg: dict[str, Any]) -> str:
    """OpenIM's GetNotificationConversationIDByMsg: `n_<groupID>`, or `n_<a>_<b>` with the ids sorted."""
    if msg.get("session_type") == GROUP_CHAT:
        return f"n_{msg.get('group_id', '')}"
    low, high = sorted((str(msg.get("send_id", "")), str(msg.get("recv_id", ""))))
    return f"n_{low}_{high}"


@dataclass(frozen=True)
class PushRun:
    """One 2001 payload: a run of consecutive messages sharing an operationID and a kind."""

    operation_id: str
    msgs: tuple[str, list[dict[str, Any]]] | None  # PushMessages.msgs: conversation id, its messages
    notes: tuple[str, list[dict[str, Any]]] | None  # PushMessages.notificationMsgs likewise


def push_runs(conversation_id: str, msgs: list[dict[str, Any]]) -> list[PushRun]:
    """One run per stretch of consecutive messages sharing an operationID and a kind (chat or notification)."""
    out: list[PushRun] = []
    runs = itertools.groupby(msgs, key=lambda m: (str(m.get(OPERATION_ID) or ""), is_notification(m)))
    for (operation_id, notification), run in runs:
        batch = list(run)
        if notification:
            out.append(PushRun(operation_id, None, (notification_conversation_id(batch[0]), batch)))
            continue
        group_notes = [m for m in batch if is_group_notification(m)]
        notes = (notification_conversation_id(group_notes[0]), group_notes) if group_notes else None
        out.append(PushRun(operation_id, (conversation_id, batch), notes))
    return out


def run_message(run: PushRun) -> pb.PushMessages:
    push = pb.PushMessages()
    if run.notes is not None:
        push.notificationMsgs[run.notes[0]].Msgs.extend(doc_to_msgdata(m) for m in run.notes[1])
    if run.msgs is not None:
        push.msgs[run.msgs[0]].Msgs.extend(doc_to_msgdata(m) for m in run.msgs[1])
    return push


def _pull_msgs_json(msgs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Msgs": msgs, "isEnd": False, "endSeq": "0"}


def run_json(run: PushRun) -> dict[str, Any]:
    """json_format.MessageToDict(run_message(run), always_print_fields_with_no_presence=True), built
    directly (app/core/protocol.py doc_to_msgdata_json): the data of a sdkType=json push frame."""
    # the same stored message in both maps (a group notification) becomes the same JSON object
    converted: dict[int, dict[str, Any]] = {}

    def convert(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for doc in docs:
            msg = converted.get(id(doc))
            if msg is None:
                msg = converted[id(doc)] = doc_to_msgdata_json(doc)
            out.append(msg)
        return out

    notes = {run.notes[0]: _pull_msgs_json(convert(run.notes[1]))} if run.notes is not None else {}
    if run.msgs is None:
        return {"notificationMsgs": notes, "msgs": {}}  # set fields first, as json_format
    chat = {run.msgs[0]: _pull_msgs_json(convert(run.msgs[1]))}
    return {"msgs": chat, "notificationMsgs": notes} if notes else {"msgs": chat, "notificationMsgs": {}}


def push_payloads(conversation_id: str, msgs: list[dict[str, Any]]) -> list[tuple[str, pb.PushMessages]]:
    """One payload per run of consecutive messages sharing an operationID and a kind (chat or notification)."""
    return [(run.operation_id, run_message(run)) for run in push_runs(conversation_id, msgs)]


class PushFrames:
    """The 2001 frames of one delivery's runs, encoded once per (encoding, gzip) for every recipient
    socket on the node: a run's protobuf is built once for gob and js, its JSON without json_format."""

    def __init__(self, runs: list[PushRun]) -> None:
        self.runs = runs
        self._messages: list[pb.PushMessages] | None = None
        self._frames: dict[tuple[str, bool], list[bytes]] = {}

    def messages(self) -> list[pb.PushMessages]:
        if self._messages is None:
            self._messages = [run_message(run) for run in self.runs]
        return self._messages

    def frames(self, sdk_type: str, gzipped: bool) -> list[bytes]:
        """Every run's frame in this encoding (all or none: a run that cannot be encoded raises first)."""
        key = (sdk_type, gzipped)
        frames = self._frames.get(key)
        if frames is None:
            plain = self._frames.get((sdk_type, False)) if gzipped else None
            if plain is None:
                plain = self._encode(sdk_type)
                self._frames[(sdk_type, False)] = plain
            frames = [protocol.gzip_frame(f) for f in plain] if gzipped else plain
            self._frames[key] = frames
        return frames

    def _encode(self, sdk_type: str) -> list[bytes]:
        if sdk_type == protocol.SDK_JSON:
            return [
                protocol.encode_json_envelope(protocol.PUSH_MSG, "", run.operation_id, run_json(run))
                for run in self.runs
            ]
        return [
            protocol.encode_response(protocol.PUSH_MSG, "", run.operation_id, push, sdk_type=sdk_type)
            for run, push in zip(self.runs, self.messages(), strict=True)
        ]
