"""OpenIM's error codes (pkg/common/servererrs) and the one exception that carries them."""

from __future__ import annotations

SERVER_INTERNAL = 500
ARGS_ERROR = 1001
NO_PERMISSION = 1002
RECORD_NOT_FOUND = 1004
GROUP_ID_NOT_FOUND = 1201
GROUP_ID_EXISTED = 1202
NOT_IN_GROUP = 1203
GROUP_DISMISSED = 1204
MSG_ALREADY_REVOKED = 1404
TOKEN_EXPIRED = 1501
TOKEN_INVALID = 1502
TOKEN_MALFORMED = 1503
TOKEN_NOT_VALID_YET = 1504
TOKEN_UNKNOWN = 1505
TOKEN_KICKED = 1506
CONN_OVER_MAX_NUM = 1601
CONN_ARGS_ERROR = 1602
CALLBACK_ERROR = 80000  # a webhook failed and its failedContinue is false (OpenIM's ErrCallback)
# Not one of OpenIM's codes (it has no per-connection rate limit): the gateway's own, in its range.
RATE_LIMITED = 1610


class ImError(Exception):
    """An error answered to a client with an OpenIM errCode; never crashes the process."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
