"""Offline push: tell the push provider about messages for users with no live connection.

The provider here is a generic JSON webhook at OFFLINE_PUSH_URL, called with a pooled `requests`
session and timeouts. Timeouts, connection errors and 5xx answers are retried with capped backoff;
a 4xx answer means the request itself is wrong and is not retried.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import requests

from app.celery_app import celery_app
from app.config import settings

log = logging.getLogger(__name__)

MAX_RETRIES = 5
_session: requests.Session | None = None


class ProviderUnavailable(Exception):
    """A retryable provider failure (5xx)."""


def session() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
        _session.mount("http://", adapter)
        _session.mount("https://", adapter)
    return _session


def notification_text(msg: dict[str, Any]) -> tuple[str, str]:
    """Title and body for the notification: offlinePushInfo when the sender set it, else the text."""
    push = msg.get("offline_push") or {}
    title = push.get("title") or msg.get("sender_nickname") or msg["send_id"]
    desc = push.get("desc") or ""
    if not desc:
        try:
            parsed = json.loads(msg.get("content") or "")
            desc = parsed.get("content", "") if isinstance(parsed, dict) else ""
        except ValueError:
            desc = ""
        desc = desc or "You have a new message"
    return str(title), str(desc)[:200]


def build_payload(conversation_id: str, user_ids: list[str], msgs: list[dict[str, Any]]) -> dict[str, Any]:
    last = msgs[-1]
    title, desc = notification_text(last)
    return {
        "userIDs": user_ids,
        "conversationID": conversation_id,
        "title": title,
        "desc": desc,
        "count": len(msgs),
        "msgs": [
            {
                "sendID": m["send_id"],
                "clientMsgID": m["client_msg_id"],
                "serverMsgID": m["server_msg_id"],
                "seq": m["seq"],
                "contentType": m["content_type"],
                "content": m["content"],
                "sendTime": m["send_time"],
            }
            for m in msgs
        ],
    }


@celery_app.task(
    name="offline.push",
    acks_late=True,
    autoretry_for=(requests.Timeout, requests.ConnectionError, ProviderUnavailable),
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
)
def offline_push(conversation_id: str, user_ids: list[str], msgs: list[dict[str, Any]]) -> int:
    if not settings.offline_push_url:
        log.info("no OFFLINE_PUSH_URL configured; skipping offline push to %s", user_ids)
        return 0
    payload = build_payload(conversation_id, user_ids, msgs)
    resp = session().post(settings.offline_push_url, json=payload, timeout=settings.offline_push_timeout)
    if resp.status_code >= 500:
        raise ProviderUnavailable(f"provider answered {resp.status_code}")
    if resp.status_code >= 400:
        log.error("offline push refused (%d) for %s: %s", resp.status_code, user_ids, resp.text[:200])
        return 0
    return len(user_ids)
