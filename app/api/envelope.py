"""What every REST blueprint shares: OpenIM's `{errCode, errMsg, errDlt, data}` answer, the error
handlers that turn any failure into one, the body and argument parsers, and the token checks.

The handlers are registered on the web app (app/api/app.py), so every route, a route that does not
exist included, answers the envelope: an ImError with its code (HTTP 200, as OpenIM), an unexpected
error with SERVER_INTERNAL, an HTTP error (404, 405...) with its status as both HTTP status and errCode.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from app.core import validation
from app.core.errors import ARGS_ERROR, NO_PERMISSION, SERVER_INTERNAL, ImError
from app.services.auth import ADMIN_PLATFORM, TokenClaims, verify_token

log = logging.getLogger(__name__)

MAX_IDS = validation.MAX_IDS_PER_REQUEST  # user, group or conversation ids in one request


# --- the envelope and its error handlers ------------------------------------------------------------


def api_response(data: Any = None, err: ImError | None = None) -> Response:
    body = {"errCode": err.code if err else 0, "errMsg": err.message if err else "", "errDlt": "", "data": data}
    return jsonify(body)


def on_im_error(err: ImError) -> Response:
    log.info("%s refused (%d): %s", request.path, err.code, err.message)
    return api_response(err=err)


def on_http_error(exc: HTTPException) -> tuple[Response, int]:
    code = exc.code or SERVER_INTERNAL
    log.info("%s %s answered HTTP %d", request.method, request.path, code)
    return api_response(err=ImError(code, exc.name)), code


def on_unexpected(exc: Exception) -> Response:
    log.exception("%s failed", request.path)
    return api_response(err=ImError(SERVER_INTERNAL, "internal server error"))


def register_error_handlers(app: Flask) -> None:
    """On the app rather than per blueprint: also covers unknown paths and blueprints added later."""
    app.register_error_handler(ImError, on_im_error)
    app.register_error_handler(HTTPException, on_http_error)
    app.register_error_handler(Exception, on_unexpected)


# --- authentication ---------------------------------------------------------------------------------


def token_claims() -> TokenClaims:
    """The `token` header's claims, revocation checked (the /auth and /third routes need no operationID)."""
    return verify_token(request.headers.get("token", ""))


def caller() -> TokenClaims:
    """The token's claims, revocation checked; OpenIM also refuses a request without an operationID header."""
    if not request.headers.get("operationID"):
        raise ImError(ARGS_ERROR, "header operationID is required")
    return token_claims()


def require_admin() -> None:
    if not token_claims().admin:
        raise ImError(NO_PERMISSION, "an admin token is required")


def acting_user(claims: TokenClaims, body: dict[str, Any], name: str = "userID") -> str:
    """The user a call is about: the body's `name`, which must be the caller unless an admin calls."""
    user_id = validation.check_user_id(body.get(name), name)
    if user_id != claims.user_id and not claims.admin:
        raise ImError(NO_PERMISSION, f"{name} is not the token's user")
    return user_id


# --- the body and its arguments ---------------------------------------------------------------------


def json_body() -> dict[str, Any]:
    """The body as a JSON object, whatever its Content-Type says (OpenIM's API reads it so too)."""
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise ImError(ARGS_ERROR, "the body must be a JSON object")
    return body


def int_arg(body: dict[str, Any], name: str, default: int = 0) -> int:
    value = body.get(name, default)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)  # protojson writes int64 as strings
    if not isinstance(value, int) or isinstance(value, bool):
        raise ImError(ARGS_ERROR, f"{name} must be an integer")
    return value


def ids_arg(body: dict[str, Any], name: str) -> list[str]:
    """A list of user or group ids (the same character rule for both), each checked, deduplicated."""
    value = body.get(name) or []
    if not isinstance(value, list) or len(value) > MAX_IDS:
        raise ImError(ARGS_ERROR, f"{name} must be a list of at most {MAX_IDS} ids")
    return validation.check_user_ids(value, name, MAX_IDS)


def conversation_arg(body: dict[str, Any], name: str = "conversationID") -> str:
    validation.check_conversation_id(body.get(name))
    return str(body[name])


def user_id_of(body: dict[str, Any]) -> str:
    return validation.check_user_id(body.get("userID"))  # no token for an id that could not be sent to


def platform_id_of(body: dict[str, Any], highest: int = ADMIN_PLATFORM - 1) -> int:
    platform_id = body.get("platformID")
    if not isinstance(platform_id, int) or isinstance(platform_id, bool) or not 1 <= platform_id <= highest:
        raise ImError(ARGS_ERROR, f"platformID must be an OpenIM platform (1-{highest})")
    return platform_id
