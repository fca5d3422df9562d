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

from flask import Blueprint, Response

from app.api.envelope import api_response, json_body, platform_id_of, require_admin, user_id_of
from app.config import secrets, settings
from app.core.errors import NO_PERMISSION, ImError
from app.services.auth import ADMIN_PLATFORM, mint_token
from app.store.redis import cache

log = logging.getLogger(__name__)

admin_api = Blueprint("admin_api", __name__)


@admin_api.post("/auth/get_admin_token")
def get_admin_token() -> Response:
    body = json_body()
    secret = body.get("secret")
    if not isinstance(secret, str) or not hmac.compare_digest(secret.encode(), secrets().admin_secret.encode()):
        raise ImError(NO_PERMISSION, "secret is invalid")
    token = mint_token(user_id_of(body), ADMIN_PLATFORM, admin=True)
    return api_response({"token": token, "expireTimeSeconds": settings.token_ttl_seconds})


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
    cache.force_logout(user_id, platform_id, settings.token_ttl_seconds)
    online = cache.get_online([user_id]).get(user_id, [])
    command = {"user_id": user_id, "platforms": [platform_id], "except_conn": "", "token": ""}
    for node in {e.node_id for e in online if e.platform_id == platform_id}:
        cache.publish_to_node(node, {"kick": command})
    log.info("force_logout of %s on platform %d", user_id, platform_id)
    return api_response({})
