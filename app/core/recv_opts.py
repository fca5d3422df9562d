"""OpenIM's receive options (recvMsgOpt), and what they do to a single-chat message, as OpenIM's
msg service decides it before a message is accepted (`modifyMessageByUserMessageReceiveOpt`).

The receiver's global option is looked at first: 1 refuses the message, 2 keeps it from offline
push. Then the receiver's option for the conversation: 1 refuses (a read receipt still passes), 2
keeps it from offline push. Notifications (the server's read receipts included) are never refused.
Group messages are not refused: a member's option only keeps offline pushes away
(app/tasks/offline.py), as in OpenIM.
"""

from __future__ import annotations

from enum import Enum

from app.core.constants import HAS_READ_RECEIPT, MSG_FROM_SYSTEM, NOTIFICATION_BEGIN

RECEIVE = 0  # receive and notify
NOT_RECEIVE = 1
RECEIVE_NOT_NOTIFY = 2
RECV_MSG_OPTS = (RECEIVE, NOT_RECEIVE, RECEIVE_NOT_NOTIFY)


class Decision(Enum):
    DELIVER = "deliver"
    NO_OFFLINE_PUSH = "no_offline_push"
    REFUSE = "refuse"


def single_chat_decision(global_opt: int, conversation_opt: int, content_type: int, msg_from: int) -> Decision:
    # A notification is never refused; a read receipt is one when the server sends it (a client's
    # own 2200 is a message like any other, but for the conversation option below).
    if content_type >= NOTIFICATION_BEGIN and (content_type != HAS_READ_RECEIPT or msg_from == MSG_FROM_SYSTEM):
        return Decision.DELIVER
    if global_opt == NOT_RECEIVE:
        return Decision.REFUSE
    if global_opt == RECEIVE_NOT_NOTIFY:
        return Decision.NO_OFFLINE_PUSH
    if conversation_opt == NOT_RECEIVE:
        return Decision.DELIVER if content_type == HAS_READ_RECEIPT else Decision.REFUSE
    if conversation_opt == RECEIVE_NOT_NOTIFY:
        return Decision.NO_OFFLINE_PUSH
    return Decision.DELIVER
