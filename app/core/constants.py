"""OpenIM's constants (openimsdk/protocol `constant`), defined here once: session types, content types,
message origin and status, platform ids. Request codes stay with the protocol (app/core/protocol.py),
error codes with the errors (app/core/errors.py)."""

from __future__ import annotations

# Session types.
SINGLE_CHAT = 1
GROUP_CHAT = 3
NOTIFICATION_CHAT = 4

# Content types. User messages are above CONTENT_TYPE_BEGIN and below NOTIFICATION_BEGIN; the
# notifications (NOTIFICATION_BEGIN to NOTIFICATION_END) only the server sends, but HAS_READ_RECEIPT.
CONTENT_TYPE_BEGIN = 100
TEXT = 101
REVOKE = 111
TYPING = 113
CUSTOM_ONLINE_ONLY = 120
NOTIFICATION_BEGIN = 1000
GROUP_NOTIFICATION_BEGIN = 1500  # GroupNotificationBegin / GroupNotificationEnd
GROUP_CREATED = 1501
MEMBER_QUIT = 1504
MEMBER_KICKED = 1508
MEMBER_INVITED = 1509
GROUP_DISMISSED_NOTIFICATION = 1511
GROUP_NOTIFICATION_END = 1599
CLEAR_CONVERSATION_NOTIFICATION = 1703  # ClearConversationTips, to the clearing user's devices
BUSINESS_NOTIFICATION = 2001  # /msg/send_business_notification
MSG_REVOKE_NOTIFICATION = 2101  # RevokeMsgTips; also the content type a revoked message pulls as
DELETE_MSGS_NOTIFICATION = 2102  # DeleteMsgsTips, to the deleting user's devices
HAS_READ_RECEIPT = 2200  # a read receipt: a notification a client may send, speaking only for itself
NOTIFICATION_END = 5000

# Message origin (msgFrom) and status.
MSG_FROM_USER = 100
MSG_FROM_SYSTEM = 200
MSG_STATUS_SENDING = 1
MSG_STATUS_SUCCESS = 2
MSG_STATUS_FAILED = 3
MSG_STATUS_DELETED = 4

# Group roles (roleLevel).
GROUP_OWNER = 100
GROUP_ADMIN = 60
GROUP_ORDINARY = 20

# Server-side send status (OpenIM's MsgStatusNotExist ... MsgSendFailed), per operationID.
SEND_STATUS_NOT_EXIST = 0
SEND_STATUS_SUCCESS = 2
SEND_STATUS_FAILED = 3

# Platform ids.
IOS = 1
ANDROID = 2
WINDOWS = 3
OSX = 4
WEB = 5
MINI_WEB = 6
LINUX = 7
ANDROID_PAD = 8
IPAD = 9
# The platforms whose live socket makes an offline push needless (OpenIM's gateway pushTerminal).
PUSH_TERMINALS = frozenset({IOS, ANDROID})
