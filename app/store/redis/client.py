"""The connections: the data Redis and, when the broker is Redis, the broker's."""

from __future__ import annotations

import redis

from app.config import settings

_client: redis.Redis | None = None
_broker_client: redis.Redis | None = None


def _connect(url: str) -> redis.Redis:
    """A blocking pool: thousands of gateway greenlets wait their turn for one of
    REDIS_MAX_CONNECTIONS connections instead of failing with MaxConnectionsError."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=20,
        decode_responses=True,
        socket_timeout=10,
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


def get_redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = _connect(settings.redis_url)
    return _client


def get_broker_redis() -> redis.Redis:
    """The broker's Redis (when the broker is Redis): shard leases and the transfer journal belong
    with the queues they guard, not with the data."""
    global _broker_client
    if _broker_client is None:
        _broker_client = _connect(settings.effective_broker_url)
    return _broker_client
