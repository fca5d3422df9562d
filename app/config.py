"""All configuration, read once from environment variables with safe local defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


def _env_str(name: str, default: str) -> str:
    raw = os.environ.get(name, "")
    return raw if raw.strip() else default


@dataclass(frozen=True)
class Settings:
    redis_url: str = field(default_factory=lambda: _env_str("REDIS_URL", "redis://127.0.0.1:6379/0"))
    broker_url: str = field(default_factory=lambda: _env_str("BROKER_URL", ""))
    mongo_url: str = field(
        default_factory=lambda: _env_str("MONGO_URL", "mongodb://127.0.0.1:27017/openim?retryWrites=false")
    )
    transfer_shards: int = field(default_factory=lambda: _env_int("TRANSFER_SHARDS", 4))
    gateway_host: str = field(default_factory=lambda: _env_str("GATEWAY_HOST", "127.0.0.1"))
    gateway_port: int = field(default_factory=lambda: _env_int("GATEWAY_PORT", 10001))
    gateway_node_id: str = field(default_factory=lambda: _env_str("GATEWAY_NODE_ID", ""))
    token_secret: str = field(
        default_factory=lambda: _env_str("TOKEN_SECRET", "openim-dev-token-secret-change-me-0001")
    )
    token_ttl_seconds: int = field(default_factory=lambda: _env_int("TOKEN_TTL_SECONDS", 90 * 24 * 3600))
    admin_secret: str = field(
        default_factory=lambda: _env_str("ADMIN_SECRET", "openim-dev-admin-secret-change-me-0001")
    )
    offline_push_url: str = field(default_factory=lambda: _env_str("OFFLINE_PUSH_URL", ""))
    offline_push_timeout: float = field(default_factory=lambda: _env_float("OFFLINE_PUSH_TIMEOUT", 5.0))
    # The gateway groups SendMsg requests per shard for this long before one broker publish.
    batch_linger_ms: float = field(default_factory=lambda: _env_float("BATCH_LINGER_MS", 3.0))
    batch_max_msgs: int = field(default_factory=lambda: _env_int("BATCH_MAX_MSGS", 200))
    max_content_bytes: int = field(default_factory=lambda: _env_int("MAX_CONTENT_BYTES", 40 * 1024))
    # Which shards this transfer worker consumes ("0,2"); empty means all of them.
    transfer_worker_shards_raw: str = field(default_factory=lambda: _env_str("TRANSFER_WORKER_SHARDS", ""))
    transfer_lease_seconds: int = field(default_factory=lambda: _env_int("TRANSFER_LEASE_SECONDS", 15))
    seq_block_single: int = field(default_factory=lambda: _env_int("SEQ_BLOCK_SINGLE", 50))
    seq_block_group: int = field(default_factory=lambda: _env_int("SEQ_BLOCK_GROUP", 100))
    metrics_host: str = field(default_factory=lambda: _env_str("METRICS_HOST", "127.0.0.1"))
    metrics_port: int = field(default_factory=lambda: _env_int("METRICS_PORT", 0))
    log_level: str = field(default_factory=lambda: _env_str("LOG_LEVEL", "INFO"))

    @property
    def effective_broker_url(self) -> str:
        """BROKER_URL, or the Redis at REDIS_URL when unset (the embedded default)."""
        return self.broker_url or self.redis_url

    @property
    def transfer_worker_shards(self) -> list[int]:
        if not self.transfer_worker_shards_raw.strip():
            return list(range(self.transfer_shards))
        shards = sorted({int(part) for part in self.transfer_worker_shards_raw.split(",") if part.strip()})
        if any(not 0 <= k < self.transfer_shards for k in shards):
            raise ValueError(f"TRANSFER_WORKER_SHARDS must be within 0..{self.transfer_shards - 1}")
        return shards

    @property
    def node_id(self) -> str:
        return self.gateway_node_id or f"gw-{os.uname().nodename}-{self.gateway_port}"


settings = Settings()
