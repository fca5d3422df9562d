"""Multi-terminal login policies, platform classes and the per-connection rate limit."""

import pytest

from app.core.constants import ANDROID, ANDROID_PAD, IOS, IPAD, LINUX, OSX, WEB, WINDOWS
from app.core.sessions import (
    CLOSE,
    KICK_SAME_CLASS,
    KICK_SAME_PLATFORM,
    NO_KICK,
    PC_AND_OTHER,
    PING,
    TokenBucket,
    counts_as_online,
    liveness_action,
    platform_class,
    platforms_to_kick,
)

ALL = [IOS, ANDROID, WINDOWS, OSX, WEB, LINUX, ANDROID_PAD, IPAD]


def test_platform_classes_follow_openim() -> None:
    assert {platform_class(p) for p in (IOS, ANDROID)} == {"Mobile"}
    assert {platform_class(p) for p in (WINDOWS, OSX, LINUX)} == {"PC"}
    assert {platform_class(p) for p in (ANDROID_PAD, IPAD)} == {"Pad"}
    assert platform_class(WEB) not in {"PC", "Mobile", "Pad"}


def test_no_kick_keeps_everyone() -> None:
    assert platforms_to_kick(NO_KICK, IOS, ALL) == set()


def test_same_platform_kick() -> None:
    assert platforms_to_kick(KICK_SAME_PLATFORM, IOS, ALL) == {IOS}
    assert platforms_to_kick(KICK_SAME_PLATFORM, IOS, [ANDROID, WEB]) == set()


def test_same_class_kick() -> None:
    assert platforms_to_kick(KICK_SAME_CLASS, IOS, ALL) == {IOS, ANDROID}
    assert platforms_to_kick(KICK_SAME_CLASS, OSX, ALL) == {WINDOWS, OSX, LINUX}
    assert platforms_to_kick(KICK_SAME_CLASS, WEB, ALL) == {WEB}


def test_pc_and_one_other() -> None:
    assert platforms_to_kick(PC_AND_OTHER, WINDOWS, ALL) == set()
    assert platforms_to_kick(PC_AND_OTHER, IOS, ALL) == {IOS, ANDROID, WEB, ANDROID_PAD, IPAD}


@pytest.mark.parametrize("policy", [NO_KICK, KICK_SAME_PLATFORM, KICK_SAME_CLASS, PC_AND_OTHER])
def test_nothing_to_kick_when_nobody_is_online(policy: int) -> None:
    assert platforms_to_kick(policy, IOS, []) == set()


def test_only_ios_in_background_stops_counting_as_online() -> None:
    assert not counts_as_online(IOS, background=True)
    assert counts_as_online(IOS, background=False)
    assert counts_as_online(ANDROID, background=True)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.allow(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.allow(100.05) is False  # half a token refilled
    assert bucket.allow(100.11) is True
    assert sum(bucket.allow(101.0 + i / 100) for i in range(100)) == pytest.approx(10 + 5, abs=1)


def test_zero_rate_means_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=0)
    assert all(bucket.allow(1.0) for _ in range(1000))


def test_liveness_pings_a_quiet_connection_once_per_interval_and_closes_a_silent_one() -> None:
    ping_s, deadline = 20.0, 60.0
    assert liveness_action(now=119.0, last_alive=100.0, last_ping=0.0, ping_seconds=ping_s, deadline=deadline) == ""
    assert liveness_action(120.0, 100.0, 0.0, ping_s, deadline) == PING
    # pinged at 120: not again until 20 s after that ping
    assert liveness_action(139.0, 100.0, 120.0, ping_s, deadline) == ""
    assert liveness_action(140.0, 100.0, 120.0, ping_s, deadline) == PING
    # a frame or pong after the ping restarts the quiet interval from it
    assert liveness_action(145.0, 130.0, 120.0, ping_s, deadline) == ""
    assert liveness_action(159.0, 100.0, 140.0, ping_s, deadline) == ""
    assert liveness_action(160.1, 100.0, 140.0, ping_s, deadline) == CLOSE
