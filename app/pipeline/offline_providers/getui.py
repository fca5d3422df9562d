"""Getui RestAPI v2 (BaseUrl = {GETUI_URL}/{appId}): users are addressed by alias (our user IDs).

Auth: POST /auth {sign = sha256(appkey + timestamp + mastersecret) hex, timestamp (ms), appkey}
answers a token that every later request carries in its `token` header. The token lives 24 h at
Getui; we keep it 23 h in Redis so all offline workers share one, and fetch a new one when Getui
answers code 10001 (token wrong or expired), then send the request once more.
One user: /push/single/alias. Several: /push/list/message creates a message task (taskid), then
/push/list/alias sends it to at most 999 aliases a request.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis

from app.pipeline.offline_providers.base import (
    ProviderMisconfigured,
    PushResult,
    RejectedError,
    RetryableError,
    chunks,
    deliver_in_parts,
    ios_sound,
    push_extras,
)
from app.pipeline.offline_providers.http import answer_json, post_json, raise_for_status
from app.store.redis.client import get_redis
from app.store.redis.keys import GETUI_TOKEN_TTL_SECONDS, getui_token_key

TOKEN_EXPIRED_CODE = 10001
MAX_LIST_ALIASES = 999
# Offline notifications older than a day are noise (Getui allows up to 3 days).
MESSAGE_TTL_MS = 24 * 3600 * 1000


def sign(app_key: str, timestamp_ms: int, master_secret: str) -> str:
    return hashlib.sha256(f"{app_key}{timestamp_ms}{master_secret}".encode()).hexdigest()


def push_content(
    title: str, desc: str, extras: dict[str, str], sound: str, channel_id: str = "", channel_name: str = ""
) -> dict[str, Any]:
    """settings, push_message and push_channel: the part shared by single and list pushes."""
    notification: dict[str, Any] = {
        "title": title,
        "body": desc,
        "click_type": "startapp",
        "badge_add_num": 1,
        "category": "CATEGORY_MESSAGE",
    }
    if channel_id:
        notification["channel_id"] = channel_id
        notification["channel_name"] = channel_name or channel_id
    return {
        "settings": {"ttl": MESSAGE_TTL_MS, "strategy": {"default": 1}},
        "push_message": {"notification": notification},
        "push_channel": {
            "ios": {
                "type": "notify",
                "payload": extras["conversationID"],
                "aps": {"alert": {"title": title, "body": desc}, "content-available": 0, "sound": sound},
                "auto_badge": "+1",
            },
            "android": {"ups": {"notification": {"title": title, "body": desc, "click_type": "startapp"}}},
        },
    }


def request_id() -> str:
    # Getui wants 10-32 characters, unique per request (a repeated one is dropped as a duplicate)
    return uuid.uuid4().hex


class Getui:
    name = "getui"
    counts_badges = False

    def __init__(
        self,
        base_url: str,
        app_id: str,
        app_key: str,
        master_secret: str,
        timeout: float,
        channel_id: str = "",
        channel_name: str = "",
        redis_client: redis.Redis | None = None,
    ) -> None:
        if not (base_url and app_id and app_key and master_secret):
            raise ProviderMisconfigured("Getui needs GETUI_URL, GETUI_APP_ID, GETUI_APP_KEY and GETUI_MASTER_SECRET")
        self.base = f"{base_url.rstrip('/')}/{app_id}"
        self.app_id = app_id
        self.app_key = app_key
        self.master_secret = master_secret
        self.timeout = timeout
        self.channel_id = channel_id
        self.channel_name = channel_name
        self.redis = redis_client
        # one /auth at a time per process: threads that find no token wait for the first one's
        self._auth_lock = threading.Lock()

    def _redis(self) -> redis.Redis:
        return self.redis if self.redis is not None else get_redis()

    def _authenticate(self) -> tuple[str, int]:
        timestamp = int(time.time() * 1000)
        body = {
            "sign": sign(self.app_key, timestamp, self.master_secret),
            "timestamp": str(timestamp),
            "appkey": self.app_key,
        }
        resp = post_json(f"{self.base}/auth", body, self.timeout)
        raise_for_status(resp, "Getui /auth")
        answer = answer_json(resp)
        data = answer.get("data") or {}
        if answer.get("code") != 0 or not data.get("token"):
            raise RejectedError(f"Getui /auth refused: {answer.get('msg')!r}", f"getui {answer.get('code')}")
        ttl = GETUI_TOKEN_TTL_SECONDS
        try:
            # never keep it past the expiry Getui announced (ms since the epoch)
            ttl = min(ttl, int((int(data["expire_time"]) - time.time() * 1000) / 1000) - 60)
        except (KeyError, TypeError, ValueError):
            pass
        return str(data["token"]), max(ttl, 60)

    def token(self, stale: str | None = None) -> str:
        """The cached token; a new one when there is none or the cached one is `stale` (refused)."""
        key = getui_token_key(self.app_id)
        current = self._redis().get(key)
        if current and current != stale:
            return str(current)
        with self._auth_lock:
            current = self._redis().get(key)
            if current and current != stale:
                return str(current)  # another thread refreshed it while we waited
            token, ttl = self._authenticate()
            self._redis().set(key, token, ex=ttl)
            return token

    def _post(self, path: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
        resp = post_json(f"{self.base}{path}", body, self.timeout, {"token": token})
        if resp.status_code >= 500 or resp.status_code == 429:
            raise_for_status(resp, f"Getui {path}")
        answer = answer_json(resp)
        if answer.get("code") != TOKEN_EXPIRED_CODE:
            raise_for_status(resp, f"Getui {path}")
        return int(answer.get("code", -1)), answer

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        token = self.token()
        code, answer = self._post(path, body, token)
        if code == TOKEN_EXPIRED_CODE:
            code, answer = self._post(path, body, self.token(stale=token))
        if code == TOKEN_EXPIRED_CODE:
            raise RetryableError(f"Getui {path} refused a fresh token: {answer.get('msg')!r}", f"getui {code}")
        if code != 0:
            raise RejectedError(f"Getui {path} answered {answer.get('msg')!r}", f"getui {code}")
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    def send(
        self,
        conversation_id: str,
        user_ids: list[str],
        title: str,
        desc: str,
        msgs: list[dict[str, Any]],
        badges: Mapping[str, int],
    ) -> PushResult:
        content = push_content(
            title, desc, push_extras(conversation_id, msgs), ios_sound(msgs), self.channel_id, self.channel_name
        )
        if len(user_ids) == 1:
            self.call("/push/single/alias", {"request_id": request_id(), "audience": {"alias": user_ids}, **content})
            return PushResult(delivered=list(user_ids))
        task = self.call("/push/list/message", {"request_id": request_id(), **content})
        taskid = task.get("taskid")
        if not taskid:
            raise RejectedError(f"Getui /push/list/message answered no taskid: {task!r}", "getui taskid")

        def push_part(aliases: list[str]) -> None:
            self.call("/push/list/alias", {"audience": {"alias": aliases}, "taskid": taskid, "is_async": True})

        return PushResult(delivered=deliver_in_parts(chunks(user_ids, MAX_LIST_ALIASES), push_part))
