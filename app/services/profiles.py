"""Senders' nickname and face URL as the server knows them (the `user` collection: app/store/mongo/users.py).

A SendMsg carries the sender's profile from here, never from the client (P8). Remembered briefly so
the hot path does not query MongoDB per message; a MongoDB outage must not hold up sending, so the
lookup has short timeouts and, after a failure, is skipped for a while (blank profile meanwhile).
"""

from __future__ import annotations

import logging
import time

from cachetools import TTLCache

from app.store.mongo import users

log = logging.getLogger(__name__)

PROFILE_TTL_SECONDS = 60  # how long a profile change takes to reach other gateway nodes' messages
OUTAGE_BACKOFF_SECONDS = 10.0
BLANK: tuple[str, str] = ("", "")

_profiles: TTLCache[str, tuple[str, str]] = TTLCache(maxsize=100_000, ttl=PROFILE_TTL_SECONDS)
_skip_until = 0.0


def sender(user_id: str) -> tuple[str, str]:
    """(nickname, face URL) of `user_id`; blank for users without a record or while MongoDB is out."""
    global _skip_until
    found = _profiles.get(user_id)
    if found is not None:
        return found
    if time.monotonic() < _skip_until:
        return BLANK
    try:
        doc = users.sender_profile(user_id)
    except Exception as exc:
        _skip_until = time.monotonic() + OUTAGE_BACKOFF_SECONDS
        log.warning("sender profiles unavailable for %.0f s (%r): sending without them", OUTAGE_BACKOFF_SECONDS, exc)
        return BLANK
    profile = (str(doc.get("nickname") or ""), str(doc.get("face_url") or "")) if doc else BLANK
    _profiles[user_id] = profile
    return profile


def forget(user_id: str) -> None:
    """This process's copy of a profile that just changed (other processes see it within the TTL)."""
    _profiles.pop(user_id, None)
