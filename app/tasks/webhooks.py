"""After-callbacks (OpenIM's afterSendSingleMsg, afterSendGroupMsg, afterMsgSaveDB, afterUserOnline,
afterUserOffline, afterRevokeMsg): POSTed off the hot path by the offline worker's threads, retried
with capped backoff while the endpoint fails, then dead-lettered (stage `webhooks`). An after-callback
cannot stop anything: its answer is only logged when it is not usable.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from celery import Task

from app.celery_app import celery_app
from app.config import settings
from app.core import webhooks as rules
from app.core.constants import GROUP_CHAT
from app.core.errors import ImError
from app.core.push_frames import OPERATION_ID
from app.ops import metrics
from app.pipeline import dead_letters
from app.pipeline import webhooks as hooks
from app.pipeline.backoff import until_done

log = logging.getLogger(__name__)

QUEUE = "webhooks"


@celery_app.task(name="webhooks.after", bind=True, acks_late=True, max_retries=None)
def after(self: Task, name: str, bodies: list[dict[str, Any]], operation_id: str) -> int:
    """POST each body to the callback; returns how many the endpoint took."""
    cfg = hooks.config().enabled(name)
    if cfg is None:
        return 0
    failed: list[dict[str, Any]] = []
    last: hooks.WebhookFailed | None = None
    for body in bodies:
        try:
            hooks.post(name, body, cfg, operation_id)
        except hooks.WebhookFailed as exc:
            failed.append(body)
            last = exc
            continue
        metrics.WEBHOOK_CALLS.labels(name, "ok").inc()
    if not failed:
        return len(bodies)
    retries: int = self.request.retries
    if retries < settings.webhook_max_retries:
        delay = min(30.0, 0.5 * 2.0**retries)
        log.warning("%s: %d of %d calls failed, retrying in %.1fs (%s)", name, len(failed), len(bodies), delay, last)
        raise self.retry(args=[name, failed, operation_id], countdown=delay, exc=last)
    metrics.WEBHOOK_CALLS.labels(name, "failed").inc(len(failed))
    reason = f"{name}: gave up after {retries + 1} attempts: {last}"[:300]
    until_done(
        partial(
            dead_letters.put,
            "webhooks",
            reason,
            dead_letters.task_payload(QUEUE, [name, failed, operation_id]),
            error=last,
            details={"callback": name, "calls": len(failed)},
        ),
        "dead letter",
    )
    return len(bodies) - len(failed)


enqueue = hooks.enqueue_after


# --- the stages' hooks ------------------------------------------------------------------------------


def _bodies(name: str, msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cfg = hooks.config().enabled(name)
    if cfg is None:
        return []
    return [rules.message_body(name, m, str(m.get(OPERATION_ID) or "")) for m in msgs if rules.sees(cfg, m)]


def after_send(committed: dict[str, list[dict[str, Any]]]) -> None:
    """afterSendSingleMsg / afterSendGroupMsg for a pushed batch (one task per callback)."""
    if not hooks.config().any_enabled("afterSendSingleMsg", "afterSendGroupMsg"):
        return
    msgs = [m for ms in committed.values() for m in ms if isinstance(m, dict)]
    enqueue("afterSendGroupMsg", _bodies("afterSendGroupMsg", [m for m in msgs if m.get("session_type") == GROUP_CHAT]))
    enqueue(
        "afterSendSingleMsg", _bodies("afterSendSingleMsg", [m for m in msgs if m.get("session_type") != GROUP_CHAT])
    )


def after_saved(msgs: list[dict[str, Any]]) -> None:
    """afterMsgSaveDB for messages MongoDB now holds."""
    enqueue("afterMsgSaveDB", _bodies("afterMsgSaveDB", msgs))


def before_push(committed: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """beforeOnlinePush (single chats) / beforeGroupOnlinePush (groups), one call per message: a
    refusal (or a failed endpoint without failedContinue) drops the message from this push (it is
    stored: clients pull it); a group answer naming users makes them the recipients."""
    config = hooks.config()
    if not config.any_enabled("beforeOnlinePush", "beforeGroupOnlinePush"):
        return committed
    out: dict[str, list[dict[str, Any]]] = {}
    for conv, msgs in committed.items():
        kept: list[dict[str, Any]] = []
        for msg in msgs:
            group = msg.get("session_type") == GROUP_CHAT
            name = "beforeGroupOnlinePush" if group else "beforeOnlinePush"
            cfg = config.enabled(name)
            if cfg is None or not rules.sees(cfg, msg):
                kept.append(msg)
                continue
            users = [] if group else [str(msg.get("recv_id", ""))]
            operation_id = str(msg.get(OPERATION_ID) or "")
            try:
                answer = hooks.before(name, rules.push_body(name, msg, users, operation_id), operation_id)
            except ImError as exc:
                log.info("%s stopped the push of %s in %s: %s", name, msg.get("client_msg_id"), conv, exc)
                continue
            targets = rules.user_ids_answer(answer or {}) if group else None
            kept.append({**msg, rules.PUSH_TO_FIELD: targets} if targets else msg)
        if kept:
            out[conv] = kept
    return out


def before_offline_push(
    conversation_id: str, user_ids: list[str], msgs: list[dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """beforeOfflinePush for a notification (its last message speaks for it): a refusal stops it (no
    users); an answer naming users makes them the ones notified; its offlinePushInfo sets the text."""
    cfg = hooks.config().enabled("beforeOfflinePush")
    if cfg is None or not msgs or not rules.sees(cfg, msgs[-1]):
        return user_ids, msgs
    last = msgs[-1]
    operation_id = str(last.get(OPERATION_ID) or "")
    try:
        answer = hooks.before(
            "beforeOfflinePush", rules.push_body("beforeOfflinePush", last, user_ids, operation_id), operation_id
        )
    except ImError as exc:
        log.info("beforeOfflinePush stopped the notification of %s: %s", conversation_id, exc)
        return [], msgs
    if not answer:
        return user_ids, msgs
    chosen = rules.user_ids_answer(answer) or user_ids
    info = answer.get("offlinePushInfo")
    if isinstance(info, dict):
        msgs = [*msgs[:-1], {**last, "offline_push": rules.offline_push_info(info)}]
    return chosen, msgs
