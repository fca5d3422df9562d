"""The one pooled HTTP session every provider uses, and how an HTTP answer maps onto our two failures."""

from __future__ import annotations

import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from app.pipeline.offline_providers.base import RejectedError, RetryableError

_session: requests.Session | None = None
_lock = threading.Lock()


def session() -> requests.Session:
    """Shared by the offline worker's threads: keep-alive connections to the provider are reused."""
    global _session
    with _lock:
        if _session is None:
            _session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16)
            _session.mount("http://", adapter)
            _session.mount("https://", adapter)
        return _session


def post_json(url: str, body: Any, timeout: float, headers: dict[str, str] | None = None) -> requests.Response:
    try:
        return session().post(url, json=body, headers=headers, timeout=timeout)
    except requests.Timeout as exc:
        raise RetryableError(f"no answer from {url} within {timeout}s", "timeout") from exc
    except requests.ConnectionError as exc:
        raise RetryableError(f"cannot reach {url}: {exc}", "connection") from exc


def answer_json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def retry_after(resp: requests.Response) -> float | None:
    raw = resp.headers.get("Retry-After", "")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own backoff


def raise_for_status(resp: requests.Response, what: str) -> None:
    """5xx and 429 (rate limited) are worth another try; any other 4xx is a refusal."""
    status = resp.status_code
    if status >= 500 or status == 429:
        raise RetryableError(f"{what} answered {status}: {resp.text[:200]}", status, retry_after(resp))
    if status >= 400:
        raise RejectedError(f"{what} answered {status}: {resp.text[:300]}", status)
