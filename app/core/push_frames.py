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

Pure: stored message dicts in, (operationID, PushMessages) pairs out, in the messages' order.
"""

from __future__ import annotations

import itertools
from typing import Any

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
from app.core.protocol import doc_to_msgdata
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


def push_payloads(conversation_id: str, msgs: list[dict[str, Any]]) -> list[tuple[str, pb.PushMessages]]:
    """One payload per run of consecutive messages sharing an operationID and a kind (chat or notification)."""
    out: list[tuple[str, pb.PushMessages]] = []
    runs = itertools.groupby(msgs, key=lambda m: (str(m.get(OPERATION_ID) or ""), is_notification(m)))
    for (operation_id, notification), run in runs:
        batch = list(run)
        push = pb.PushMessages()
        if notification:
            pulled = push.notificationMsgs[notification_conversation_id(batch[0])]
        else:
            pulled = push.msgs[conversation_id]
            group_notes = [m for m in batch if is_group_notification(m)]
            if group_notes:
                copies = push.notificationMsgs[notification_conversation_id(group_notes[0])]
                copies.Msgs.extend(doc_to_msgdata(m) for m in group_notes)
        pulled.Msgs.extend(doc_to_msgdata(m) for m in batch)
        out.append((operation_id, push))
    return out
