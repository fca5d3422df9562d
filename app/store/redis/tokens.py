"""Revoked tokens: kicked or logged out one by one, or every token of a user's platform at once."""

from __future__ import annotations

import time

from app.store.redis.client import get_redis, mget
from app.store.redis.keys import kicked_token_key, logged_out_key


def mark_token_kicked(token: str, ttl_seconds: int) -> None:
    """A kicked or logged-out (2003) token is refused (1506) until it would have expired anyway."""
    get_redis().set(kicked_token_key(token), 1, ex=max(1, ttl_seconds))


def force_logout(user_id: str, platform_id: int, ttl_seconds: int) -> None:
    """Every token of this user and platform issued before now stops working (admin force_logout);
    to the millisecond, as tokens' `iat`, so a token minted a moment before is revoked too."""
    get_redis().set(logged_out_key(user_id, platform_id), f"{time.time():.3f}", ex=max(1, ttl_seconds))


def token_refused(token: str, user_id: str, platform_id: int, issued_at: float) -> bool:
    """Kicked by a newer login, logged out, or issued before a force_logout of its user and platform."""
    # Two slots on a Redis Cluster (the token's key carries no user tag): mget splits them there.
    kicked, logged_out_at = mget([kicked_token_key(token), logged_out_key(user_id, platform_id)])
    return kicked is not None or (logged_out_at is not None and issued_at < float(logged_out_at))
