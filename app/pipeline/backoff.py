"""Retry an operation through outages of Redis, MongoDB or the broker, with capped exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import kombu.exceptions
import pymongo.errors
import redis.exceptions

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    # a Redis Cluster in a failover ("The cluster is down", MASTERDOWN) or moving a slot (TRYAGAIN):
    # redis-py retries them for single commands, but a pipeline raises them, and they are never
    # the messages' fault (one seen in CI dead-lettered an acknowledged message mid-failover)
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    pymongo.errors.AutoReconnect,
    pymongo.errors.ServerSelectionTimeoutError,
    pymongo.errors.NetworkTimeout,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
)


def until_done(
    operation: Callable[[], T],
    what: str,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run `operation` until it succeeds, as long as its failures are transient outages.

    Used where giving up would lose an acknowledged message: the caller holds its broker message
    unacknowledged meanwhile, so a crash during the wait redelivers it.
    """
    delay = first_delay
    attempt = 0
    while True:
        try:
            return operation()
        except TRANSIENT_ERRORS as exc:
            attempt += 1
            if on_retry is not None:
                on_retry(exc)
            log.warning("%s failed (attempt %d, retrying in %.1fs): %r", what, attempt, delay, exc)
            sleep(delay)
            delay = min(max_delay, delay * 2)
