"""Admin REST on the gateway's port, shaped as OpenIM's API: `{errCode, errMsg, errDlt, data}`.

POST /auth/get_admin_token {secret, userID}   -> an admin token, when `secret` is ADMIN_SECRET
POST /auth/get_user_token  {platformID, userID} with header `token: <admin token>` -> a user token
POST /auth/force_logout    {platformID, userID} with an admin token -> that login is closed (2002)
                           on whichever gateway node holds it, and its tokens stop working (1506);
                           platformID 10 revokes that admin userID's admin tokens issued before now
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from app.config import secrets, settings
from app.core.errors import ARGS_ERROR, NO_PERMISSION, ImError
from app.core.validation import check_user_id
from app.services.auth import ADMIN_PLATFORM, mint_token, verify_token
from app.store.redis import tokens
from app.store.redis.online import get_online, publish_to_node

log = logging.getLogger(__name__)

admin_api = Blueprint("admin_api", __name__)


def api_response(data: Any = None, err: ImError | None = None) -> Response:
    body = {"errCode": err.code if err else 0, "errMsg": err.message if err else "", "errDlt": "", "data": data}
    return jsonify(body)


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ImError(ARGS_ERROR, "the body must be a JSON object")
    return body


def require_admin() -> None:
    claims = verify_token(request.headers.get("token", ""))
    if not claims.admin:
        raise ImError(NO_PERMISSION, "an admin token is required")


def user_id_of(body: dict[str, Any]) -> str:
    return check_user_id(body.get("userID"))  # no token for an id that could not be sent to


@admin_api.errorhandler(ImError)
def on_im_error(err: ImError) -> Response:
    log.info("admin request %s refused (%d): %s", request.path, err.code, err.message)
    return api_response(err=err)


@admin_api.post("/auth/get_admin_token")
def get_admin_token() -> Response:
    body = json_body()
    secret = body.get("secret")
    if not isinstance(secret, str) or not hmac.compare_digest(secret.encode(), secrets().admin_secret.encode()):
        raise ImError(NO_PERMISSION, "secret is invalid")
    token = mint_token(user_id_of(body), ADMIN_PLATFORM, admin=True)
    return api_response({"token": token, "expireTimeSeconds": settings.token_ttl_seconds})


def platform_id_of(body: dict[str, Any], highest: int = ADMIN_PLATFORM - 1) -> int:
    platform_id = body.get("platformID")
    if not isinstance(platform_id, int) or isinstance(platform_id, bool) or not 1 <= platform_id <= highest:
        raise ImError(ARGS_ERROR, f"platformID must be an OpenIM platform (1-{highest})")
    return platform_id


@admin_api.post("/auth/get_user_token")
def get_user_token() -> Response:
    require_admin()
    body = json_body()
    token = mint_token(user_id_of(body), platform_id_of(body))
    return api_response({"token": token, "expireTimeSeconds": settings.token_ttl_seconds})


@admin_api.post("/auth/force_logout")
def force_logout() -> Response:
    require_admin()
    body = json_body()
    user_id, platform_id = user_id_of(body), platform_id_of(body, highest=ADMIN_PLATFORM)  # 10: admin tokens
    tokens.force_logout(user_id, platform_id, settings.token_ttl_seconds)
    online = get_online([user_id]).get(user_id, [])
    command = {"user_id": user_id, "platforms": [platform_id], "except_conn": "", "token": ""}
    for node in {e.node_id for e in online if e.platform_id == platform_id}:
        publish_to_node(node, {"kick": command})
    log.info("force_logout of %s on platform %d", user_id, platform_id)
    return api_response({})
