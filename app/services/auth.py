"""HS256 JWT tokens with OpenIM's claims (userID, platformID, exp), and the one check every interface uses.

User tokens are signed with TOKEN_SECRET, admin tokens (claim `admin`, platform 10) with a key derived
from ADMIN_SECRET: a token signed with the user key is never an admin token, whatever it claims, and a
token signed with the admin key is accepted only as one. verify_token() adds revocation (Redis), so
the websocket login and every REST route refuse the same tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import jwt

from app.config import secrets, settings
from app.core.errors import TOKEN_EXPIRED, TOKEN_INVALID, TOKEN_KICKED, TOKEN_MALFORMED, TOKEN_NOT_VALID_YET, ImError
from app.store.redis import tokens

ADMIN_PLATFORM = 10


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    platform_id: int
    admin: bool = False
    expires_at: int = 0  # unix seconds
    issued_at: float = 0.0  # unix seconds, to the millisecond (a force logout revokes what was issued before it)


def mint_token(
    user_id: str,
    platform_id: int,
    ttl_seconds: int | None = None,
    secret: str | None = None,
    admin: bool = False,
) -> str:
    now = time.time()
    ttl = settings.token_ttl_seconds if ttl_seconds is None else ttl_seconds
    claims: dict[str, object] = {
        "userID": user_id,
        "platformID": int(platform_id),
        "exp": int(now) + ttl,
        "nbf": int(now) - 5,
        "iat": math.floor(now * 1000) / 1000,  # never after now: a force logout this instant revokes it
    }
    if admin:
        claims["admin"] = True
    key = secret or (secrets().admin_token_key if admin else secrets().token_secret)
    return jwt.encode(claims, key, algorithm="HS256")


def _claims_unverified(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError as exc:
        raise ImError(TOKEN_MALFORMED, "token is malformed") from exc
    if not isinstance(claims, dict):
        raise ImError(TOKEN_MALFORMED, "token is malformed")
    return claims


def parse_token(token: str, secret: str | None = None) -> TokenClaims:
    """Verify signature and expiry (not revocation: see verify_token); raise ImError with OpenIM's codes."""
    if not token:
        raise ImError(TOKEN_MALFORMED, "token is missing")
    # The claim only picks the key; the signature decides: an `admin` claim under the user key fails.
    admin = _claims_unverified(token).get("admin") is True
    key = secret or (secrets().admin_token_key if admin else secrets().token_secret)
    try:
        claims = jwt.decode(token, key, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError as exc:
        raise ImError(TOKEN_EXPIRED, "token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise ImError(TOKEN_NOT_VALID_YET, "token is not valid yet") from exc
    except jwt.InvalidSignatureError as exc:  # a DecodeError to PyJWT, but the token is well formed
        raise ImError(TOKEN_INVALID, "token signature is invalid") from exc
    except jwt.DecodeError as exc:
        raise ImError(TOKEN_MALFORMED, "token is malformed") from exc
    except jwt.InvalidTokenError as exc:
        raise ImError(TOKEN_INVALID, f"token is invalid: {exc}") from exc
    user_id = claims.get("userID")
    platform_id = claims.get("platformID")
    if not isinstance(user_id, str) or not user_id or not isinstance(platform_id, int):
        raise ImError(TOKEN_INVALID, "token lacks userID/platformID")
    if admin and platform_id != ADMIN_PLATFORM:
        # admin tokens live on the admin platform, so force_logout of (user, 10) revokes all of them
        raise ImError(TOKEN_INVALID, f"an admin token must have platformID {ADMIN_PLATFORM}")
    issued_at = claims.get("iat") or 0
    return TokenClaims(
        user_id=user_id,
        platform_id=platform_id,
        admin=admin,
        expires_at=int(claims["exp"]),
        issued_at=float(issued_at) if isinstance(issued_at, int | float) else 0.0,
    )


def verify_token(token: str) -> TokenClaims:
    """The one check of the websocket login and every REST route: signature, expiry, and revocation
    (kicked by a newer login, logged out with 2003, or issued before a force logout of its user and
    platform, the admin platform included): a revoked token gets 1506, as OpenIM's TokenKicked."""
    claims = parse_token(token)
    if tokens.token_refused(token, claims.user_id, claims.platform_id, claims.issued_at):
        raise ImError(TOKEN_KICKED, "token was revoked (another login, a logout or a force logout); log in again")
    return claims
