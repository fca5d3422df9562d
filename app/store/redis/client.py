"""The connections: the data Redis (one server, or a Redis Cluster with REDIS_CLUSTER=1) and, when
the broker is Redis, the broker's (always one server: Celery's Redis transport knows no cluster)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from app.config import settings

_client: redis.Redis | None = None
_broker_client: redis.Redis | None = None

# Client options shared by both kinds of data client.
_OPTIONS: dict[str, Any] = {"decode_responses": True, "socket_timeout": 10, "health_check_interval": 30}


def _connect(url: str) -> redis.Redis:
    """A blocking pool: thousands of gateway greenlets wait their turn for one of
    REDIS_MAX_CONNECTIONS connections instead of failing with MaxConnectionsError."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=settings.redis_max_connections, timeout=20, **_OPTIONS
    )
    return redis.Redis(connection_pool=pool)


def _connect_cluster(url: str) -> redis.Redis:
    """A cluster client from one seed node; it learns the slot map and follows MOVED/ASK and failovers.
    Each node gets the same blocking pool as a single server. RedisCluster has Redis's command API
    (pipelines are ClusterPipelines, pub/sub a ClusterPubSub), hence the cast for the type checker."""
    cluster = RedisCluster.from_url(
        url,
        max_connections=settings.redis_max_connections,
        connection_pool_class=redis.BlockingConnectionPool,
        timeout=20,
        **_OPTIONS,
    )
    return cast(redis.Redis, cluster)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def get_redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = _connect_cluster(settings.redis_url) if settings.redis_cluster else _connect(settings.redis_url)
    return _client


def get_broker_redis() -> redis.Redis:
    """The broker's Redis (when the broker is Redis): shard leases and the transfer journal belong
    with the queues they guard, not with the data."""
    global _broker_client
    if _broker_client is None:
        _broker_client = _connect(settings.effective_broker_url)
    return _broker_client


def mget(keys: Sequence[str]) -> list[Any]:
    """MGET of keys that may lie in different cluster slots (one MGET per slot on a cluster, in one
    pipelined round trip per node): values in the keys' order."""
    r = get_redis()
    if is_cluster(r):
        return list(cast(RedisCluster, r).mget_nonatomic(list(keys)))
    return list(r.mget(keys))
