"""OpenIM's webhooks over HTTP: the configuration read once per process, one pooled `requests`
session, and the two ways a callback runs (app/core/webhooks.py has the rules and the bodies).

Before-callbacks run where the decision is made (the gateway for sends, the push and offline stages
for pushes), bounded by their timeout: in the gateway under gevent, so a stalled endpoint holds up
only the request that waits for it. After-callbacks never run in the hot path: they are queued as a
Celery task (`webhooks.after`, app/tasks/webhooks.py), retried, and dead-lettered when out of tries.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import requests
import yaml
from requests.adapters import HTTPAdapter

from app.celery_app import celery_app
from app.config import settings
from app.core import webhooks as rules
from app.core.errors import CALLBACK_ERROR, ImError
from app.core.webhooks import CallbackConfig, WebhooksConfig
from app.ops import metrics

log = logging.getLogger(__name__)

_config: WebhooksConfig | None = None
_session: requests.Session | None = None
_lock = threading.Lock()


class WebhookFailed(Exception):
    """The endpoint did not answer usably (timeout, connection error, non-2xx status, not JSON)."""


def config() -> WebhooksConfig:
    """WEBHOOKS_CONFIG (OpenIM's webhooks.yml) or WEBHOOKS_ENABLED, read once per process."""
    global _config
    if _config is not None:  # read on every SendMsg: no lock once it is read
        return _config
    with _lock:
        if _config is None:
            if settings.webhooks_config_file:
                with open(settings.webhooks_config_file, encoding="utf-8") as f:
                    data = yaml.safe_load(f) or {}
                if not isinstance(data, dict):
                    raise rules.ConfigError(f"{settings.webhooks_config_file} is not a mapping")
                _config = rules.parse_config(data, settings.webhook_url)
            else:
                _config = rules.config_from_names(
                    settings.webhook_url,
                    settings.webhooks_enabled,
                    settings.webhook_timeout,
                    settings.webhook_failed_continue,
                )
            if _config.callbacks and not _config.url:
                log.warning("webhooks are configured but no WEBHOOK_URL is set: none will be called")
        return _config


def check_webhooks() -> None:
    """At a process's start: a webhook configuration that cannot be read stops it, in plain words."""
    try:
        cfg = config()
    except (OSError, yaml.YAMLError, rules.ConfigError) as exc:
        raise SystemExit(f"webhooks: {exc}") from exc
    enabled = sorted(name for name in rules.COMMANDS if cfg.enabled(name))
    if enabled:
        log.info("webhooks enabled at %s: %s", cfg.url, ", ".join(enabled))


def reset() -> None:
    """Forget the configuration (tests, and a process that changed its environment)."""
    global _config
    with _lock:
        _config = None


def session() -> requests.Session:
    global _session
    with _lock:
        if _session is None:
            _session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64)
            _session.mount("http://", adapter)
            _session.mount("https://", adapter)
        return _session


def post(name: str, body: dict[str, Any], cfg: CallbackConfig, operation_id: str) -> dict[str, Any]:
    """One call; the answer's JSON object, or WebhookFailed."""
    url = f"{config().url}/{rules.COMMANDS[name]}"
    started = time.monotonic()
    try:
        resp = session().post(url, json=body, headers={"operationID": operation_id}, timeout=cfg.timeout)
    except requests.RequestException as exc:
        raise WebhookFailed(f"{name}: {url} did not answer: {exc!r}") from exc
    finally:
        metrics.WEBHOOK_SECONDS.labels(name).observe(time.monotonic() - started)
    if not 200 <= resp.status_code < 300:
        raise WebhookFailed(f"{name}: {url} answered {resp.status_code}: {resp.text[:200]}")
    try:
        answer = resp.json()
    except ValueError as exc:
        raise WebhookFailed(f"{name}: {url} answered something that is not JSON: {resp.text[:200]}") from exc
    if not isinstance(answer, dict):
        raise WebhookFailed(f"{name}: {url} answered JSON that is not an object")
    return answer


def before(name: str, body: dict[str, Any], operation_id: str) -> dict[str, Any] | None:
    """Run a before-callback. None: not enabled, or the endpoint failed and failedContinue let it go
    on. Otherwise the answer. Raises ImError when the answer refuses (its errCode) or when the endpoint
    failed and failedContinue is false (80000, OpenIM's CallbackError)."""
    cfg = config().enabled(name)
    if cfg is None:
        return None
    try:
        answer = post(name, body, cfg, operation_id)
    except WebhookFailed as exc:
        if cfg.failed_continue:
            metrics.WEBHOOK_CALLS.labels(name, "skipped").inc()
            log.warning("%s (failedContinue: going on)", exc, extra={"operationID": operation_id})
            return None
        metrics.WEBHOOK_CALLS.labels(name, "failed").inc()
        log.warning("%s (failedContinue is false: stopped)", exc, extra={"operationID": operation_id})
        raise ImError(CALLBACK_ERROR, f"webhook {name} failed") from exc
    refused = rules.refusal(answer)
    if refused is not None:
        metrics.WEBHOOK_CALLS.labels(name, "refused").inc()
        log.info(
            "webhook %s refused: %d %s", name, refused.err_code, refused.err_msg, extra={"operationID": operation_id}
        )
        raise ImError(refused.err_code or CALLBACK_ERROR, refused.err_msg)
    metrics.WEBHOOK_CALLS.labels(name, "ok").inc()
    return answer


def new_operation_id() -> str:
    return uuid.uuid4().hex


def enqueue_after(name: str, bodies: list[dict[str, Any]], operation_id: str = "") -> None:
    """Queue after-callback bodies for the `webhooks.after` task (app/tasks/webhooks.py) when the
    callback is enabled; a no-op otherwise."""
    if bodies and config().enabled(name):
        celery_app.send_task(
            "webhooks.after", args=[name, bodies, operation_id or new_operation_id()], queue="webhooks"
        )


def user_status_changed(name: str, user_id: str, platform_id: int, conn_id: str, background: bool) -> None:
    """afterUserOnline / afterUserOffline from a gateway node; never fails the connection."""
    if not config().enabled(name):
        return
    operation_id = new_operation_id()
    try:
        body = rules.user_status_body(name, user_id, platform_id, conn_id, background, operation_id)
        enqueue_after(name, [body], operation_id)
    except Exception:
        log.warning("could not queue %s for %s", name, user_id, exc_info=True)
