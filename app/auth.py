"""HS256 JWT tokens with OpenIM's claims (userID, platformID, exp)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from app.config import settings
from app.errors import TOKEN_EXPIRED, TOKEN_INVALID, TOKEN_MALFORMED, TOKEN_NOT_VALID_YET, ImError

ADMIN_PLATFORM = 10


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    platform_id: int
    admin: bool = False
    expires_at: int = 0  # unix seconds
    issued_at: int = 0


def mint_token(
    user_id: str,
    platform_id: int,
    ttl_seconds: int | None = None,
    secret: str | None = None,
    admin: bool = False,
) -> str:
    now = int(time.time())
    ttl = settings.token_ttl_seconds if ttl_seconds is None else ttl_seconds
    claims: dict[str, object] = {
        "userID": user_id,
        "platformID": int(platform_id),
        "exp": now + ttl,
        "nbf": now - 5,
        "iat": now,
    }
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, secret or settings.token_secret, algorithm="HS256")


def parse_token(token: str, secret: str | None = None) -> TokenClaims:
    """Verify signature and expiry; raise ImError with OpenIM's token error codes."""
    if not token:
        raise ImError(TOKEN_MALFORMED, "token is missing")
    try:
        claims = jwt.decode(token, secret or settings.token_secret, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError as exc:
        raise ImError(TOKEN_EXPIRED, "token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise ImError(TOKEN_NOT_VALID_YET, "token is not valid yet") from exc
    except jwt.DecodeError as exc:
        raise ImError(TOKEN_MALFORMED, "token is malformed") from exc
    except jwt.InvalidTokenError as exc:
        raise ImError(TOKEN_INVALID, f"token is invalid: {exc}") from exc
    user_id = claims.get("userID")
    platform_id = claims.get("platformID")
    if not isinstance(user_id, str) or not user_id or not isinstance(platform_id, int):
        raise ImError(TOKEN_INVALID, "token lacks userID/platformID")
    return TokenClaims(
        user_id=user_id,
        platform_id=platform_id,
        admin=claims.get("admin") is True,
        expires_at=int(claims["exp"]),
        issued_at=int(claims.get("iat") or 0),
    )
