"""Offline push: tell the configured provider (app/offline_providers) about messages for users with
no live connection.

Before calling the provider: only messages that may go offline (offlinePush option, not typing or
receipts), and only receivers whose recvMsgOpt for the conversation is 0 (receive and notify).
Timeouts, connection errors, 5xx and 429 are retried with capped exponential backoff, sending
again only to the users not yet delivered; a refusal (4xx) or running out of retries leaves a
dead letter (app/pipeline/dead_letters.py, stage `offline`) and a log line. A message whose notification
cannot be built is dead-lettered alone; the others are still sent (P7).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from functools import partial
from typing import Any

from celery import Task

from app.celery_app import celery_app
from app.config import settings
from app.core import classify, recv_opts
from app.ops import metrics
from app.pipeline import dead_letters, offline_providers
from app.pipeline.backoff import TRANSIENT_ERRORS, until_done
from app.pipeline.offline_providers import Provider, ProviderError, ProviderMisconfigured
from app.store.mongo import conversations
from app.store.redis import badges as badge_store
from app.tasks import webhooks as webhook_tasks

log = logging.getLogger(__name__)

_provider: Provider | None = None
_provider_lock = threading.Lock()


def provider() -> Provider | None:
    """The configured provider, built once per worker process."""
    global _provider
    with _provider_lock:
        if _provider is None:
            _provider = offline_providers.create(settings)
        return _provider


def notification_text(msg: dict[str, Any]) -> tuple[str, str]:
    """Title and body for the notification: offlinePushInfo when the sender set it, else the text."""
    push = msg.get("offline_push") or {}
    title = push.get("title") or msg.get("sender_nickname") or msg["send_id"]
    desc = push.get("desc") or ""
    if not desc:
        try:
            parsed = json.loads(msg.get("content") or "")
            desc = parsed.get("content", "") if isinstance(parsed, dict) else ""
        except (ValueError, RecursionError):  # deep JSON recurses past the worker's stack
            desc = ""
        desc = desc or "You have a new message"
    return str(title), str(desc)[:200]


def receivers_to_notify(conversation_id: str, user_ids: list[str]) -> list[str]:
    """OpenIM's recvMsgOpt: 1 (do not receive) and 2 (receive without notification) get no push."""
    opts = conversations.recv_msg_opts(conversation_id, user_ids)
    return [u for u in user_ids if opts.get(u, recv_opts.RECEIVE) == recv_opts.RECEIVE]


def retry_delay(retries: int, first: float, cap: float, asked: float | None = None) -> float:
    """Capped exponential backoff with jitter (so many failed tasks do not come back at once); at
    least what the provider asked for (Retry-After), within the cap."""
    delay: float = min(cap, first * 2.0**retries) * random.uniform(0.5, 1.0)
    if asked is not None:
        delay = max(delay, min(asked, cap))
    return delay


def next_delay(retries: int, asked: float | None = None) -> float:
    return retry_delay(retries, settings.offline_push_backoff, settings.offline_push_backoff_max, asked)


def dead_letter(
    provider_name: str,
    status: int | str,
    conversation_id: str,
    user_ids: list[str],
    msgs: list[dict[str, Any]],
    reason: str,
    error: BaseException | None = None,
) -> None:
    """Keep a notification given up on; redriven as an offline.push task for the same users."""
    log.error(
        "offline push to %d users of %s given up (%s, %s): %s",
        len(user_ids),
        conversation_id,
        provider_name,
        status,
        reason,
    )
    details = {
        "provider": provider_name,
        "status": status,
        "users": user_ids,
        "clientMsgIDs": [m.get("client_msg_id") if isinstance(m, dict) else None for m in msgs],
    }
    until_done(
        partial(
            dead_letters.put,
            "offline",
            reason,
            dead_letters.task_payload("offline", [conversation_id, user_ids, msgs]),
            conversation=conversation_id,
            error=error,
            details=details,
        ),
        "dead letter",
    )


def offline_pushable(provider_name: str, conversation_id: str, user_ids: list[str], msgs: list[Any]) -> list[Any]:
    """The messages that may go offline; one that cannot even be classified is dead-lettered alone."""
    pushable: list[Any] = []
    for msg in msgs:
        try:
            if classify.goes_offline(msg):
                notification_text(msg)  # raises now rather than in the middle of a send
                pushable.append(msg)
        except Exception as exc:
            dead_letter(
                provider_name, "malformed", conversation_id, user_ids, [msg], f"malformed message: {exc!r}", exc
            )
    return pushable


def send_one_by_one(
    chosen: Provider,
    conversation_id: str,
    users: list[str],
    pushable: list[dict[str, Any]],
    badges: dict[str, int],
    first: BaseException,
) -> int:
    """The provider raised something other than its own errors for the batch: send each message
    alone, so only a message that fails by itself is dead-lettered (no retries for those)."""
    if len(pushable) == 1:
        metrics.OFFLINE_PUSH_FAILED.labels(chosen.name).inc(len(users))
        dead_letter(chosen.name, "error", conversation_id, users, pushable, f"cannot send it: {first!r}", first)
        return 0
    log.warning("offline push via %s failed (%r): sending one message at a time", chosen.name, first)
    delivered = 0
    for msg in pushable:
        try:
            title, desc = notification_text(msg)
            result = chosen.send(conversation_id, users, title, desc, [msg], badges)
        except Exception as exc:
            metrics.OFFLINE_PUSH_FAILED.labels(chosen.name).inc(len(users))
            dead_letter(chosen.name, "error", conversation_id, users, [msg], f"cannot send it: {exc!r}", exc)
            continue
        metrics.OFFLINE_PUSH_SUCCESS.labels(chosen.name).inc(len(result.delivered))
        delivered = max(delivered, len(result.delivered))
    return delivered


@celery_app.task(name="offline.push", bind=True, acks_late=True, max_retries=None)
def offline_push(
    self: Task,
    conversation_id: str,
    user_ids: list[str],
    msgs: list[dict[str, Any]],
    badges: dict[str, int] | None = None,
) -> int:
    """Returns how many users the provider accepted the notification for. `badges` is given on a
    retry: the users' unread counts were already raised by the first attempt."""
    if not user_ids:
        return 0
    pushable = offline_pushable(settings.offline_push_provider, conversation_id, user_ids, msgs)
    if not pushable:
        return 0
    try:
        chosen = provider()
    except ProviderMisconfigured as exc:
        name = settings.offline_push_provider
        metrics.OFFLINE_PUSH_FAILED.labels(name).inc(len(user_ids))
        dead_letter(name, exc.status, conversation_id, user_ids, pushable, exc.reason, exc)
        return 0
    if chosen is None:
        log.info("offline push is off (no OFFLINE_PUSH_URL); skipping %s", user_ids)
        return 0
    retries: int = self.request.retries
    try:
        users = receivers_to_notify(conversation_id, user_ids)
    except TRANSIENT_ERRORS as exc:
        # MongoDB unreachable: ask again later rather than notify users who muted the conversation
        if retries < settings.offline_push_max_retries:
            raise self.retry(
                args=[conversation_id, user_ids, pushable], countdown=next_delay(retries), exc=exc
            ) from exc
        metrics.OFFLINE_PUSH_FAILED.labels(chosen.name).inc(len(user_ids))
        reason = f"cannot read recvMsgOpt: {exc!r}"
        dead_letter(chosen.name, "recv_msg_opt", conversation_id, user_ids, pushable, reason, exc)
        return 0
    if badges is None:  # a retry already asked the webhook
        users, pushable = webhook_tasks.before_offline_push(conversation_id, users, pushable)
    if not users:
        return 0
    title, desc = notification_text(pushable[-1])  # offline_pushable tried it already
    try:
        if badges is None:
            badges = badge_store.add(users, conversation_id, len(pushable)) if chosen.counts_badges else {}
        result = chosen.send(conversation_id, users, title, desc, pushable, badges)
    except ProviderError as exc:
        metrics.OFFLINE_PUSH_SUCCESS.labels(chosen.name).inc(len(exc.delivered))
        delivered = set(exc.delivered)
        remaining = [u for u in users if u not in delivered]
        if exc.retryable and retries < settings.offline_push_max_retries:
            delay = next_delay(retries, exc.retry_after)
            log.warning(
                "offline push via %s failed (%s), attempt %d; retrying %d users in %.2fs",
                chosen.name,
                exc.status,
                retries + 1,
                len(remaining),
                delay,
            )
            raise self.retry(
                args=[conversation_id, remaining, pushable], kwargs={"badges": badges}, countdown=delay, exc=exc
            ) from exc
        metrics.OFFLINE_PUSH_FAILED.labels(chosen.name).inc(len(remaining))
        why = exc.reason if not exc.retryable else f"{exc.reason} (after {retries + 1} attempts)"
        dead_letter(chosen.name, exc.status, conversation_id, remaining, pushable, why, exc)
        return len(exc.delivered)
    except TRANSIENT_ERRORS as exc:  # our own Redis (provider tokens, badges) unreachable: as a 5xx
        if retries < settings.offline_push_max_retries:
            raise self.retry(
                args=[conversation_id, user_ids, pushable],
                kwargs={"badges": badges},
                countdown=next_delay(retries),
                exc=exc,
            ) from exc
        metrics.OFFLINE_PUSH_FAILED.labels(chosen.name).inc(len(users))
        dead_letter(
            chosen.name, "outage", conversation_id, users, pushable, f"{exc!r} (after {retries + 1} attempts)", exc
        )
        return 0
    except Exception as exc:
        return send_one_by_one(chosen, conversation_id, users, pushable, badges or {}, exc)
    metrics.OFFLINE_PUSH_SUCCESS.labels(chosen.name).inc(len(result.delivered))
    if result.skipped:
        log.info("offline push via %s: no device for %s", chosen.name, result.skipped)
    return len(result.delivered)
