"""Users' unread badges for offline push (OpenIM keeps USER_BADGE_UNREAD_COUNT_SUM per user for FCM).

Per user a hash: conversation -> messages notified since the user last read it, so a read takes
away only its conversation's part; `/third/set_app_badge` replaces the whole with the app's own
count (field APP). The badge a notification carries is the sum.
"""

from __future__ import annotations

from redis.client import Pipeline

from app.store.redis import scripts
from app.store.redis.client import get_redis
from app.store.redis.keys import BADGE_TTL_SECONDS, badge_key

APP = "*"  # the count the app set itself; no conversation id is "*"


def add(user_ids: list[str], conversation_id: str, count: int) -> dict[str, int]:
    """user -> their badge after `count` more unread messages in the conversation (one round trip)."""
    if not user_ids:
        return {}
    client = get_redis()
    script = scripts.load("badge_add", client)
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        script(keys=[badge_key(user_id)], args=[conversation_id, count, BADGE_TTL_SECONDS], client=pipe)
    return {u: int(total) for u, total in zip(user_ids, pipe.execute(), strict=True)}


def read(user_id: str, conversation_id: str, pipe: Pipeline | None = None) -> None:
    """The user read the conversation: its part of the badge goes (queued on `pipe` if given)."""
    (pipe if pipe is not None else get_redis()).hdel(badge_key(user_id), conversation_id)


def set_total(user_id: str, count: int) -> None:
    key = badge_key(user_id)
    pipe = get_redis().pipeline(transaction=True)
    pipe.delete(key)
    if count > 0:
        pipe.hset(key, APP, count)
        pipe.expire(key, BADGE_TTL_SECONDS)
    pipe.execute()


def total(user_id: str) -> int:
    return sum(int(v) for v in get_redis().hvals(badge_key(user_id)))
