"""All configuration, read once from environment variables with safe local defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from app.conversation import shards_of_part


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
    # Connections per process to each Redis; callers beyond it wait (gateway greenlets, worker threads).
    redis_max_connections: int = field(default_factory=lambda: _env_int("REDIS_MAX_CONNECTIONS", 200))
    broker_url: str = field(default_factory=lambda: _env_str("BROKER_URL", ""))
    mongo_url: str = field(
        default_factory=lambda: _env_str("MONGO_URL", "mongodb://127.0.0.1:27017/openim?retryWrites=false")
    )
    # One shard per transfer process (the Procfile runs two): a process handles its shards' batches
    # one at a time, so more shards than processes only makes each batch smaller.
    transfer_shards: int = field(default_factory=lambda: _env_int("TRANSFER_SHARDS", 2))
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
    # Offline push: which provider (webhook | jpush | getui | fcm) and how hard to try.
    offline_push_provider: str = field(default_factory=lambda: _env_str("OFFLINE_PUSH_PROVIDER", "webhook"))
    offline_push_url: str = field(default_factory=lambda: _env_str("OFFLINE_PUSH_URL", ""))
    offline_push_timeout: float = field(default_factory=lambda: _env_float("OFFLINE_PUSH_TIMEOUT", 5.0))
    offline_push_max_retries: int = field(default_factory=lambda: _env_int("OFFLINE_PUSH_MAX_RETRIES", 5))
    offline_push_backoff: float = field(default_factory=lambda: _env_float("OFFLINE_PUSH_BACKOFF", 1.0))
    offline_push_backoff_max: float = field(default_factory=lambda: _env_float("OFFLINE_PUSH_BACKOFF_MAX", 60.0))
    jpush_url: str = field(default_factory=lambda: _env_str("JPUSH_URL", "https://api.jpush.cn/v3/push"))
    jpush_app_key: str = field(default_factory=lambda: _env_str("JPUSH_APP_KEY", ""))
    jpush_master_secret: str = field(default_factory=lambda: _env_str("JPUSH_MASTER_SECRET", ""))
    jpush_apns_production: bool = field(default_factory=lambda: _env_int("JPUSH_APNS_PRODUCTION", 0) != 0)
    getui_url: str = field(default_factory=lambda: _env_str("GETUI_URL", "https://restapi.getui.com/v2"))
    getui_app_id: str = field(default_factory=lambda: _env_str("GETUI_APP_ID", ""))
    getui_app_key: str = field(default_factory=lambda: _env_str("GETUI_APP_KEY", ""))
    getui_master_secret: str = field(default_factory=lambda: _env_str("GETUI_MASTER_SECRET", ""))
    getui_channel_id: str = field(default_factory=lambda: _env_str("GETUI_CHANNEL_ID", ""))
    getui_channel_name: str = field(default_factory=lambda: _env_str("GETUI_CHANNEL_NAME", ""))
    fcm_url: str = field(default_factory=lambda: _env_str("FCM_URL", "https://fcm.googleapis.com"))
    fcm_project_id: str = field(default_factory=lambda: _env_str("FCM_PROJECT_ID", ""))
    # An OAuth2 access token for FCM, or "module:function" returning one (e.g. from service-account credentials).
    fcm_access_token: str = field(default_factory=lambda: _env_str("FCM_ACCESS_TOKEN", ""))
    fcm_token_provider: str = field(default_factory=lambda: _env_str("FCM_TOKEN_PROVIDER", ""))
    # The gateway groups SendMsg requests per shard for this long before one broker publish.
    batch_linger_ms: float = field(default_factory=lambda: _env_float("BATCH_LINGER_MS", 3.0))
    batch_linger_max_ms: float = field(default_factory=lambda: _env_float("BATCH_LINGER_MAX_MS", 20.0))
    batch_max_msgs: int = field(default_factory=lambda: _env_int("BATCH_MAX_MSGS", 200))
    max_content_bytes: int = field(default_factory=lambda: _env_int("MAX_CONTENT_BYTES", 40 * 1024))
    # Which shards this transfer worker consumes ("0,2"); empty means all of them.
    transfer_worker_shards_raw: str = field(default_factory=lambda: _env_str("TRANSFER_WORKER_SHARDS", ""))
    # "i/n": this is the i-th of n transfer processes sharing those shards (the Procfile runs two, so
    # that one batch's Redis and MongoDB round trips overlap another shard's); empty: one process.
    transfer_part: str = field(default_factory=lambda: _env_str("TRANSFER_PART", ""))
    # Redis broker: a dead worker's unacknowledged messages come back after this long (celeryconfig),
    # and journaled hand-offs older than this are run by the consumers' sweepers (app/journal.py).
    broker_visibility_timeout: int = field(default_factory=lambda: _env_int("BROKER_VISIBILITY_TIMEOUT", 120))
    transfer_lease_seconds: int = field(default_factory=lambda: _env_int("TRANSFER_LEASE_SECONDS", 15))
    seq_block_single: int = field(default_factory=lambda: _env_int("SEQ_BLOCK_SINGLE", 50))
    seq_block_group: int = field(default_factory=lambda: _env_int("SEQ_BLOCK_GROUP", 100))
    seq_block_growth_max: int = field(default_factory=lambda: _env_int("SEQ_BLOCK_GROWTH_MAX", 16))
    # OpenIM's multiLogin.policy: 0 no kick, 1 kick same platform, 4 same class, 5 PC and one other.
    multi_login_policy: int = field(default_factory=lambda: _env_int("MULTI_LOGIN_POLICY", 1))
    # Server websocket pings; a socket with no frame and no pong for the read deadline is closed.
    gateway_ping_seconds: float = field(default_factory=lambda: _env_float("GATEWAY_PING_SECONDS", 20.0))
    gateway_read_deadline_seconds: float = field(
        default_factory=lambda: _env_float("GATEWAY_READ_DEADLINE_SECONDS", 60.0)
    )
    # Requests per second per connection (0 = unlimited) and the burst above that rate.
    gateway_rate_limit: float = field(default_factory=lambda: _env_float("GATEWAY_RATE_LIMIT", 100.0))
    gateway_rate_burst: float = field(default_factory=lambda: _env_float("GATEWAY_RATE_BURST", 200.0))
    gateway_max_conns: int = field(default_factory=lambda: _env_int("GATEWAY_MAX_CONNS", 20000))
    # 1 runs the persist worker on the solo pool. Celery's threads pool was seen to stall for minutes
    # after a broker restart (fault suite, both brokers), holding every hand-off that came meanwhile.
    persist_concurrency: int = field(default_factory=lambda: _env_int("PERSIST_CONCURRENCY", 1))
    metrics_host: str = field(default_factory=lambda: _env_str("METRICS_HOST", "127.0.0.1"))
    metrics_port: int = field(default_factory=lambda: _env_int("METRICS_PORT", 0))
    log_level: str = field(default_factory=lambda: _env_str("LOG_LEVEL", "INFO"))
    # json: one JSON object per line (operationID, conversationID, seq ... as fields); text: plain lines
    log_format: str = field(default_factory=lambda: _env_str("LOG_FORMAT", "json"))

    @property
    def effective_broker_url(self) -> str:
        """BROKER_URL, or the Redis at REDIS_URL when unset (the embedded default)."""
        return self.broker_url or self.redis_url

    @property
    def transfer_worker_shards(self) -> list[int]:
        if not self.transfer_worker_shards_raw.strip():
            shards = list(range(self.transfer_shards))
        else:
            shards = sorted({int(part) for part in self.transfer_worker_shards_raw.split(",") if part.strip()})
        if any(not 0 <= k < self.transfer_shards for k in shards):
            raise ValueError(f"TRANSFER_WORKER_SHARDS must be within 0..{self.transfer_shards - 1}")
        return shards_of_part(shards, self.transfer_part)

    @property
    def node_id(self) -> str:
        return self.gateway_node_id or f"gw-{os.uname().nodename}-{self.gateway_port}"


settings = Settings()
