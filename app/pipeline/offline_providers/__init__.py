"""Offline push providers (OFFLINE_PUSH_PROVIDER): webhook, jpush, getui, fcm; one module each."""

from __future__ import annotations

from app.config import Settings
from app.pipeline.offline_providers.base import (
    Provider,
    ProviderError,
    ProviderMisconfigured,
    PushResult,
    RejectedError,
    RetryableError,
)

__all__ = [
    "Provider",
    "ProviderError",
    "ProviderMisconfigured",
    "PushResult",
    "RejectedError",
    "RetryableError",
    "create",
]

NAMES = ("webhook", "jpush", "getui", "fcm")


def enabled(settings: Settings) -> bool:
    """False when offline push is off: the push stage then hands nothing to the offline stage."""
    return not (settings.offline_push_provider.strip().lower() == "webhook" and not settings.offline_push_url)


def create(settings: Settings) -> Provider | None:
    """The configured provider; None when offline push is off (webhook without OFFLINE_PUSH_URL).

    Raises ProviderMisconfigured for an unknown name or missing credentials.
    """
    name = settings.offline_push_provider.strip().lower()
    timeout = settings.offline_push_timeout
    if name == "webhook":
        from app.pipeline.offline_providers.webhook import Webhook

        return Webhook(settings.offline_push_url, timeout) if settings.offline_push_url else None
    if name == "jpush":
        from app.pipeline.offline_providers.jpush import JPush

        return JPush(
            settings.jpush_url,
            settings.jpush_app_key,
            settings.jpush_master_secret,
            settings.jpush_apns_production,
            timeout,
        )
    if name == "getui":
        from app.pipeline.offline_providers.getui import Getui

        return Getui(
            settings.getui_url,
            settings.getui_app_id,
            settings.getui_app_key,
            settings.getui_master_secret,
            timeout,
            settings.getui_channel_id,
            settings.getui_channel_name,
        )
    if name == "fcm":
        from app.pipeline.offline_providers.fcm import Fcm, ServiceAccountTokens, TokenSource, token_source

        project_id = settings.fcm_project_id
        tokens: TokenSource
        if settings.fcm_credentials_file:
            account = ServiceAccountTokens(settings.fcm_credentials_file, timeout)
            tokens, project_id = account, project_id or account.project_id
        else:
            tokens = token_source(settings.fcm_access_token, settings.fcm_token_provider)
        return Fcm(settings.fcm_url, project_id, tokens, timeout)
    raise ProviderMisconfigured(f"OFFLINE_PUSH_PROVIDER must be one of {', '.join(NAMES)}, not {name!r}")
