"""Firebase Cloud Messaging HTTP v1: POST {FCM_URL}/v1/projects/{projectId}/messages:send, one request
per device registration token, `Authorization: Bearer <OAuth2 access token>`.

Clients register their tokens through /third/fcm_update_token (app/api/third.py), kept in Redis per
user and platform. A token FCM no longer knows (404 UNREGISTERED, 403 SENDER_ID_MISMATCH) is
forgotten and that device skipped. The access token comes from a service-account key file
(FCM_CREDENTIALS_FILE: Google's own auth library mints and refreshes OAuth2 tokens from it, at the
token_uri the file names), else a function named by FCM_TOKEN_PROVIDER ("module:function"), else a
static token (FCM_ACCESS_TOKEN); a 401 asks the source once more for a fresh one.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import requests
from google.auth import exceptions as google_exceptions

from app.core.constants import ANDROID, IOS, WEB
from app.pipeline.offline_providers.base import (
    ProviderMisconfigured,
    PushResult,
    RejectedError,
    RetryableError,
    deliver_in_parts,
    ios_sound,
    push_extras,
)
from app.pipeline.offline_providers.http import answer_json, post_json, raise_for_status
from app.store.redis import push_tokens

# The platforms OpenIM registers FCM tokens for.
FCM_PLATFORMS = (IOS, ANDROID, WEB)
STALE_TOKEN_ERRORS = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


class TokenSource(Protocol):
    def __call__(self, refresh: bool = False) -> str:
        """An access token; `refresh` after FCM refused the last one."""
        ...


class ServiceAccountTokens:
    """OAuth2 access tokens minted from a service-account key by google-auth, refreshed shortly before
    they expire (or when FCM refused one), shared by the worker's threads."""

    def __init__(self, path: str, timeout: float) -> None:
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account

        try:
            self.credentials = service_account.Credentials.from_service_account_file(path, scopes=[FCM_SCOPE])
        except (OSError, ValueError) as exc:
            raise ProviderMisconfigured(f"FCM_CREDENTIALS_FILE {path!r} is not a service-account key: {exc}") from exc
        self.project_id = str(self.credentials.project_id or "")
        session = requests.Session()
        self._request = Request(session)
        self._timeout = timeout
        self._lock = threading.Lock()

    def __call__(self, refresh: bool = False) -> str:
        with self._lock:
            if refresh or not self.credentials.valid:
                try:
                    self.credentials.refresh(self._request)
                except google_exceptions.TransportError as exc:  # the token endpoint is unreachable
                    raise RetryableError(f"cannot reach Google's token endpoint: {exc}", "oauth") from exc
                except google_exceptions.RefreshError as exc:
                    # google-auth already retried a 5xx/429 a few times; it marks those retryable
                    if getattr(exc, "retryable", False):
                        raise RetryableError(f"Google's token endpoint failed: {exc}", "oauth") from exc
                    raise RejectedError(f"Google refused the service-account key: {exc}", "oauth") from exc
            return str(self.credentials.token)


def token_source(static_token: str, provider_path: str) -> TokenSource:
    """FCM_TOKEN_PROVIDER ("package.module:function") wins over the static FCM_ACCESS_TOKEN."""
    if provider_path:
        module_name, _, attr = provider_path.partition(":")
        if not module_name or not attr:
            raise ProviderMisconfigured(f"FCM_TOKEN_PROVIDER must be 'module:function', not {provider_path!r}")
        func = getattr(importlib.import_module(module_name), attr, None)
        if not callable(func):
            raise ProviderMisconfigured(f"FCM_TOKEN_PROVIDER {provider_path!r} is not a function")
        return lambda refresh=False: str(func())
    if static_token:
        return lambda refresh=False: static_token
    raise ProviderMisconfigured("FCM needs FCM_ACCESS_TOKEN or FCM_TOKEN_PROVIDER")


def build_message(
    device_token: str, title: str, desc: str, extras: dict[str, str], sound: str, badge: int
) -> dict[str, Any]:
    """`badge`: the user's unread count (app/store/redis/badges.py), shown on iOS and Android icons."""
    return {
        "message": {
            "token": device_token,
            "notification": {"title": title, "body": desc},
            "data": extras,
            "android": {"priority": "high", "notification": {"notification_count": badge}},
            "apns": {"payload": {"aps": {"sound": sound, "badge": badge}}},
        }
    }


def fcm_error_code(answer: dict[str, Any]) -> str:
    """FCM's own error code (UNREGISTERED ...) from the details of a google.rpc error answer."""
    error = answer.get("error") or {}
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status", ""))


class Fcm:
    name = "fcm"
    counts_badges = True

    def __init__(self, base_url: str, project_id: str, access_token: TokenSource, timeout: float) -> None:
        if not (base_url and project_id):
            raise ProviderMisconfigured("FCM needs FCM_URL and FCM_PROJECT_ID")
        self.url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self.access_token = access_token
        self.timeout = timeout

    def _post(self, body: dict[str, Any], bearer: str) -> requests.Response:
        return post_json(self.url, body, self.timeout, {"Authorization": f"Bearer {bearer}"})

    def _send_one(self, user_id: str, platform_id: int, device_token: str, body: dict[str, Any]) -> bool:
        """True when FCM took it; False when the device token is stale (and now forgotten)."""
        resp = self._post(body, self.access_token())
        if resp.status_code == 401:
            resp = self._post(body, self.access_token(refresh=True))
        if resp.status_code in (403, 404) and fcm_error_code(answer_json(resp)) in STALE_TOKEN_ERRORS:
            push_tokens.delete_fcm_token(user_id, platform_id, device_token)
            return False
        raise_for_status(resp, "FCM")
        if not answer_json(resp).get("name"):
            raise RejectedError(f"FCM answered without a message name: {resp.text[:200]}", resp.status_code)
        return True

    def send(
        self,
        conversation_id: str,
        user_ids: list[str],
        title: str,
        desc: str,
        msgs: list[dict[str, Any]],
        badges: Mapping[str, int],
    ) -> PushResult:
        extras = push_extras(conversation_id, msgs)
        sound = ios_sound(msgs)
        devices = push_tokens.get_fcm_tokens(user_ids, FCM_PLATFORMS)
        skipped = [u for u in user_ids if u not in devices]
        reached: set[str] = set()

        def push_user(users: list[str]) -> None:
            for user_id in users:
                for platform_id, device_token in sorted(devices[user_id].items()):
                    body = build_message(device_token, title, desc, extras, sound, badges.get(user_id, 1))
                    if self._send_one(user_id, platform_id, device_token, body):
                        reached.add(user_id)

        # one part per user: a retry after a failure resends only to the users not done yet
        done = deliver_in_parts(([u] for u in user_ids if u in devices), push_user)
        skipped += [u for u in done if u not in reached]
        return PushResult(delivered=[u for u in done if u in reached], skipped=skipped)
