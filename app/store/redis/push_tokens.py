"""Offline push providers' tokens: devices' FCM registration tokens (Getui's auth token is kept by
app/pipeline/offline_providers/getui.py under keys.getui_token_key)."""

from __future__ import annotations

from collections.abc import Iterable

from app.store.redis import scripts
from app.store.redis.client import get_redis
from app.store.redis.keys import fcm_token_key


def set_fcm_token(user_id: str, platform_id: int, token: str, ttl_seconds: int) -> None:
    """ttl_seconds 0 keeps the token until the client replaces it (as OpenIM does)."""
    get_redis().set(fcm_token_key(user_id, platform_id), token, ex=ttl_seconds or None)


def get_fcm_tokens(user_ids: list[str], platform_ids: Iterable[int]) -> dict[str, dict[int, str]]:
    """user -> {platform: FCM token} for the users that registered any, in one round trip."""
    pairs = [(u, p) for u in user_ids for p in platform_ids]
    pipe = get_redis().pipeline(transaction=False)
    for user_id, platform_id in pairs:
        pipe.get(fcm_token_key(user_id, platform_id))
    out: dict[str, dict[int, str]] = {}
    for (user_id, platform_id), token in zip(pairs, pipe.execute(), strict=True):
        if token:
            out.setdefault(user_id, {})[platform_id] = str(token)
    return out


def delete_fcm_token(user_id: str, platform_id: int, token: str) -> None:
    """Forget a token FCM no longer knows, unless the client registered a new one meanwhile."""
    scripts.load("delete_if_equal", get_redis())(keys=[fcm_token_key(user_id, platform_id)], args=[token])


def forget_device(user_id: str, platform_id: int) -> None:
    """A logout: the device gets no more notifications (OpenIM's DelFcmToken)."""
    get_redis().delete(fcm_token_key(user_id, platform_id))
