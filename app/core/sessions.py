"""Pure session rules: OpenIM's platform classes, multi-terminal login policies, per-socket rate limit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from app.core.constants import ANDROID, ANDROID_PAD, IOS, IPAD, LINUX, OSX, WINDOWS

PC, MOBILE, PAD = "PC", "Mobile", "Pad"
PLATFORM_CLASS = {IOS: MOBILE, ANDROID: MOBILE, WINDOWS: PC, OSX: PC, LINUX: PC, ANDROID_PAD: PAD, IPAD: PAD}

# OpenIM's multiLogin.policy values.
NO_KICK = 0
KICK_SAME_PLATFORM = 1
KICK_SAME_CLASS = 4
PC_AND_OTHER = 5
LOGIN_POLICIES = (NO_KICK, KICK_SAME_PLATFORM, KICK_SAME_CLASS, PC_AND_OTHER)


def platform_class(platform_id: int) -> str:
    """PC, Mobile or Pad; web and mini-program are classes of their own, as in OpenIM."""
    return PLATFORM_CLASS.get(platform_id, f"platform-{platform_id}")


def platforms_to_kick(policy: int, new_platform: int, online: Iterable[int]) -> set[int]:
    """Which of a user's online platforms a new login on `new_platform` pushes out."""
    platforms = set(online)
    if policy == KICK_SAME_PLATFORM:
        return {p for p in platforms if p == new_platform}
    if policy == KICK_SAME_CLASS:
        return {p for p in platforms if platform_class(p) == platform_class(new_platform)}
    if policy == PC_AND_OTHER:
        # PCs log in side by side; any other device is the user's only non-PC device
        if platform_class(new_platform) == PC:
            return set()
        return {p for p in platforms if platform_class(p) != PC}
    return set()


def counts_as_online(platform_id: int, background: bool) -> bool:
    """An iOS app in the background cannot receive socket pushes: it needs offline push (OpenIM)."""
    return not (background and platform_id == IOS)


@dataclass
class TokenBucket:
    """Requests per second with a burst allowance, refilled continuously."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def allow(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


PING = "ping"
CLOSE = "close"


def liveness_action(now: float, last_alive: float, last_ping: float, ping_seconds: float, deadline: float) -> str:
    """What the gateway's liveness sweep does with a connection: CLOSE when nothing (no frame, no
    pong) came from it within the read deadline; PING when it has been quiet for ping_seconds since
    its last frame, pong or our last ping; else "" (nothing)."""
    if now - last_alive > deadline:
        return CLOSE
    if now - max(last_alive, last_ping) >= ping_seconds:
        return PING
    return ""
