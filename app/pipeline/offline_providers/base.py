"""What every offline push provider has in common: the interface, the result, and the two kinds of failure.

A provider turns (conversation, users, title, desc, messages) into the requests its HTTP API wants.
It raises RetryableError for what may pass by itself (timeouts, connection errors, 5xx, 429) and
RejectedError for what will not (4xx, an answer that does not match the request). Either carries
the users already delivered before the failure, so a retry pushes only the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class ProviderError(Exception):
    retryable = False

    def __init__(self, reason: str, status: int | str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {reason}")
        self.reason = reason
        # the HTTP status, or what went wrong when there was none ("timeout", "sendno", "getui 10005" ...)
        self.status = status
        # seconds the provider asked us to wait (Retry-After), if it said
        self.retry_after = retry_after
        self.delivered: list[str] = []


class RetryableError(ProviderError):
    """The provider may accept the same request later."""

    retryable = True


class RejectedError(ProviderError):
    """The provider refused the request, or answered something else: sending it again would not help."""


class ProviderMisconfigured(RejectedError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, "config")


@dataclass
class PushResult:
    delivered: list[str]
    # users the provider has no device for (no FCM token, no JPush alias): nothing to retry
    skipped: list[str] = field(default_factory=list)


class Provider(Protocol):
    name: str
    # True: the provider shows our per-user unread badge (app/store/redis/badges.py), which the
    # offline task then counts; JPush and Getui count badges themselves ("+1"), as in OpenIM.
    counts_badges: bool

    def send(
        self,
        conversation_id: str,
        user_ids: list[str],
        title: str,
        desc: str,
        msgs: list[dict[str, Any]],
        badges: Mapping[str, int],
    ) -> PushResult: ...


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def deliver_in_parts(parts: Iterable[list[str]], push_part: Callable[[list[str]], None]) -> list[str]:
    """Push part after part; a failure carries the users of the parts that went through."""
    delivered: list[str] = []
    for part in parts:
        try:
            push_part(part)
        except ProviderError as exc:
            exc.delivered = delivered + exc.delivered
            raise
        delivered.extend(part)
    return delivered


def push_extras(conversation_id: str, msgs: list[dict[str, Any]]) -> dict[str, str]:
    """What the app needs to open the right conversation when the notification is tapped (all strings:
    FCM's data and Getui's payload only take strings)."""
    last = msgs[-1]
    push = last.get("offline_push") or {}
    return {
        "conversationID": conversation_id,
        "clientMsgID": str(last.get("client_msg_id", "")),
        "sendID": str(last.get("send_id", "")),
        "seq": str(last.get("seq", 0)),
        "ex": str(push.get("ex", "")),
    }


def ios_sound(msgs: list[dict[str, Any]]) -> str:
    push = msgs[-1].get("offline_push") or {}
    return str(push.get("ios_push_sound") or "default")
