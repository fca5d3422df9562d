"""All configuration, read once from environment variables with safe local defaults."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets as random_secrets
from dataclasses import dataclass, field
from pathlib import Path

from app.core.conversation import shards_of_part

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
APP_ENVS = ("development", "production")
MIN_SECRET_BYTES = 32
SECRET_NAMES = ("TOKEN_SECRET", "ADMIN_SECRET")
SECRETS_FILE = "secrets.env"  # in the data folder; written by `python -m app up` (mode 0600)


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
    # development: secrets generated into the data folder when unset, short ones only warned about;
    # production (the default): unset or short secrets stop every process that signs or checks tokens.
    app_env: str = field(default_factory=lambda: _env_str("APP_ENV", "production"))
    # The environment's values only: read the secrets through secrets() (environment, else the data folder).
    token_secret_env: str = field(default_factory=lambda: _env_str("TOKEN_SECRET", ""))
    admin_secret_env: str = field(default_factory=lambda: _env_str("ADMIN_SECRET", ""))
    token_ttl_seconds: int = field(default_factory=lambda: _env_int("TOKEN_TTL_SECONDS", 90 * 24 * 3600))
    # `python -m app up`'s embedded Redis/MongoDB data and its generated secrets.
    data_dir: str = field(default_factory=lambda: _env_str("APP_DATA_DIR", str(ROOT / ".data")))
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
    # and journaled hand-offs older than this are run by the consumers' sweepers (app/pipeline/journal.py).
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
    # A SendMsg not accepted by the broker within this long is answered "send it again" (SERVER_INTERNAL).
    gateway_publish_timeout_seconds: float = field(
        default_factory=lambda: _env_float("GATEWAY_PUBLISH_TIMEOUT_SECONDS", 15.0)
    )
    # Every socket (websockets, REST, and those still sending their HTTP request) counts; beyond this a
    # new one is closed at once. A request must arrive within the handshake timeout; past the pending
    # cap the oldest socket still waiting for its request is closed to make room.
    gateway_max_sockets: int = field(
        default_factory=lambda: _env_int("GATEWAY_MAX_SOCKETS", _env_int("GATEWAY_MAX_CONNS", 20000) + 1000)
    )
    gateway_handshake_timeout: float = field(default_factory=lambda: _env_float("GATEWAY_HANDSHAKE_TIMEOUT", 10.0))
    gateway_max_pending_sockets: int = field(default_factory=lambda: _env_int("GATEWAY_MAX_PENDING_SOCKETS", 1000))
    # A client whose unsent frames exceed this many bytes is not reading: it is dropped and goes offline.
    gateway_outbox_max_bytes: int = field(default_factory=lambda: _env_int("GATEWAY_OUTBOX_MAX_BYTES", 4 * 1024 * 1024))
    # Dead letters (app/pipeline/dead_letters.py): newest entries kept per stage, and the largest payload kept
    # whole (a larger one is kept truncated, for reading only).
    dead_letters_max: int = field(default_factory=lambda: _env_int("DEAD_LETTERS_MAX", 10_000))
    dead_letters_max_payload_bytes: int = field(
        default_factory=lambda: _env_int("DEAD_LETTERS_MAX_PAYLOAD_BYTES", 1024 * 1024)
    )
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


# --- secrets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    token_secret: str  # HS256 key of user tokens
    admin_secret: str  # what POST /auth/get_admin_token checks
    source: str  # where they came from, for the log

    @property
    def admin_token_key(self) -> str:
        """HS256 key of admin tokens: derived, so a user-token key never verifies an admin token."""
        return hmac.new(self.admin_secret.encode(), b"openim admin token key v1", hashlib.sha256).hexdigest()


def secrets_path(cfg: Settings) -> Path:
    return Path(cfg.data_dir) / SECRETS_FILE


def read_secrets_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines (so the file can also be sourced by a shell); {} when there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs if name.strip() in SECRET_NAMES}


def write_secrets_file(path: Path) -> bool:
    """Random secrets, once: created atomically with mode 0600; False when the file already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{name}={random_secrets.token_urlsafe(48)}\n" for name in SECRET_NAMES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, ("# generated by python -m app up; keep private\n" + body).encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created it first: theirs wins
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def resolve_secrets(cfg: Settings, generate: bool = False) -> Secrets:
    """TOKEN_SECRET / ADMIN_SECRET from the environment, else from the data folder's secrets.env
    (written by `python -m app up`, or here when `generate` or APP_ENV=development). Outside
    development mode, unset, short or equal secrets stop the process (SystemExit)."""
    if cfg.app_env not in APP_ENVS:
        raise SystemExit(f"APP_ENV must be one of {', '.join(APP_ENVS)} (got {cfg.app_env!r})")
    dev = cfg.app_env == "development"
    path = secrets_path(cfg)
    env = {"TOKEN_SECRET": cfg.token_secret_env, "ADMIN_SECRET": cfg.admin_secret_env}
    stored: dict[str, str] = {}
    if not all(env.values()):
        if (generate or dev) and write_secrets_file(path):
            log.warning("generated random TOKEN_SECRET and ADMIN_SECRET into %s", path)
        stored = read_secrets_file(path)
    values = {name: env[name] or stored.get(name, "") for name in SECRET_NAMES}
    unset = [name for name in SECRET_NAMES if not values[name]]
    problems = [f"{name} is not set" for name in unset]
    problems += [
        f"{name} is shorter than {MIN_SECRET_BYTES} bytes"
        for name in SECRET_NAMES
        if values[name] and len(values[name].encode()) < MIN_SECRET_BYTES
    ]
    if values["TOKEN_SECRET"] and values["TOKEN_SECRET"] == values["ADMIN_SECRET"]:
        problems.append("TOKEN_SECRET and ADMIN_SECRET are the same")
    if problems and (unset or not dev):
        raise SystemExit(
            "refusing to start: "
            + "; ".join(problems)
            + f". Set TOKEN_SECRET and ADMIN_SECRET to two different random strings of at least {MIN_SECRET_BYTES}"
            " bytes (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`), or run"
            f" `python -m app up` once to generate them into {path}, or set APP_ENV=development on a"
            " development machine."
        )
    if problems:
        log.warning("APP_ENV=development: %s (refused in production)", "; ".join(problems))
    source = "environment" if all(env.values()) else f"environment and {path}" if any(env.values()) else str(path)
    return Secrets(values["TOKEN_SECRET"], values["ADMIN_SECRET"], source)


_secrets: Secrets | None = None


def secrets() -> Secrets:
    """This process's secrets (resolve_secrets on first use); the gateway and the token command
    call it at start, so they refuse to start rather than fail on the first request."""
    global _secrets
    if _secrets is None:
        _secrets = resolve_secrets(settings)
    return _secrets
