"""OpenIM's /third REST calls on the gateway's port, `{errCode, errMsg, errDlt, data}` envelope.

POST /third/fcm_update_token {platformID, fcmToken, account, expireTime} with the user's own token
in the `token` header: remember the device's FCM registration token for offline push. expireTime
is the token's lifetime in seconds (0: until replaced), as in OpenIM.

POST /third/set_app_badge {userID, appUnreadCount}: the app's own unread count becomes the user's
badge (app/store/redis/badges.py); later notifications count on from it.
"""

from __future__ import annotations

from flask import Blueprint, Response

from app.api.envelope import acting_user, api_response, int_arg, json_body, token_claims
from app.core.errors import ARGS_ERROR, NO_PERMISSION, ImError
from app.core.validation import check_user_id
from app.pipeline.offline_providers.fcm import FCM_PLATFORMS
from app.store.redis import badges, push_tokens

third_api = Blueprint("third_api", __name__)

MAX_FCM_TOKEN_CHARS = 4096
MAX_EXPIRE_SECONDS = 2**31


@third_api.post("/third/fcm_update_token")
def fcm_update_token() -> Response:
    claims = token_claims()
    body = json_body()
    account = check_user_id(body.get("account"), "account")
    if account != claims.user_id and not claims.admin:
        raise ImError(NO_PERMISSION, "a user can only register their own FCM token")
    platform_id = int_arg(body, "platformID")
    if platform_id not in FCM_PLATFORMS:
        raise ImError(ARGS_ERROR, f"platformID must be one of {list(FCM_PLATFORMS)} (iOS, Android, Web)")
    fcm_token = body.get("fcmToken")
    if not isinstance(fcm_token, str) or not fcm_token.strip() or len(fcm_token) > MAX_FCM_TOKEN_CHARS:
        raise ImError(ARGS_ERROR, f"fcmToken must be a non-empty string of at most {MAX_FCM_TOKEN_CHARS} characters")
    expire = int_arg(body, "expireTime")
    if not 0 <= expire <= MAX_EXPIRE_SECONDS:
        raise ImError(ARGS_ERROR, "expireTime must be seconds between 0 (no expiry) and 2^31")
    push_tokens.set_fcm_token(account, platform_id, fcm_token.strip(), expire)
    return api_response({})


MAX_BADGE = 2**31 - 1


@third_api.post("/third/set_app_badge")
def set_app_badge() -> Response:
    claims = token_claims()
    body = json_body()
    user_id = acting_user(claims, body)
    count = int_arg(body, "appUnreadCount")
    if not 0 <= count <= MAX_BADGE:
        raise ImError(ARGS_ERROR, "appUnreadCount must be between 0 and 2^31-1")
    badges.set_total(user_id, count)
    return api_response({})
