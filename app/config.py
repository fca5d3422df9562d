"""All configuration: the one reader of the environment (app, Celery and ops code read `settings`).

Each setting is declared once below with its variable's name and default; a Settings() reads them
all, and nothing else happens at import. Unset or blank variables take the default.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets as random_secrets
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from app.core.conversation import shards_of_part

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
APP_ENVS = ("development", "production")
MIN_SECRET_BYTES = 32
SECRET_NAMES = ("TOKEN_SECRET", "ADMIN_SECRET")
SECRETS_FILE = "secrets.env"  # in the data folder; written by `python -m app up` (mode 0600)
DEFAULT_MAX_CONNS = 20000

T = TypeVar("T", str, int, float, bool)
_FLAGS = {"0": False, "false": False, "no": False, "off": False, "1": True, "true": True, "yes": True, "on": True}


def read_env(name: str, default: T) -> T:
    """The variable `name` parsed as its default's type; unset or blank means the default."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    if isinstance(default, bool):  # before int: a bool is an int. 0/false/no/off, else any nonzero number
        word = raw.strip().lower()
        return _FLAGS[word] if word in _FLAGS else int(word) != 0
    return type(default)(raw)


def env(name: str, default: T) -> T:
    """A setting read from the variable `name` whenever a Settings is built (so tests can set it)."""
    return field(default_factory=partial(read_env, name, default), metadata={"env": name})


def _default_max_sockets() -> int:
    return read_env("GATEWAY_MAX_SOCKETS", read_env("GATEWAY_MAX_CONNS", DEFAULT_MAX_CONNS) + 1000)


@dataclass(frozen=True)
class Settings:
    redis_url: str = env("REDIS_URL", "redis://127.0.0.1:6379/0")
    # 1: REDIS_URL names any node of a Redis Cluster holding the data (never the broker: set BROKER_URL).
    redis_cluster: bool = env("REDIS_CLUSTER", False)
    # Connections per process to each Redis; callers beyond it wait (gateway greenlets, worker threads).
    redis_max_connections: int = env("REDIS_MAX_CONNECTIONS", 200)
    broker_url: str = env("BROKER_URL", "")
    mongo_url: str = env("MONGO_URL", "mongodb://127.0.0.1:27017/openim?retryWrites=false")
    # A transfer process handles its shards' batches of one gateway flush in one run (the Procfile runs one
    # process for every shard); more shards spread over more processes when one process is not enough.
    transfer_shards: int = env("TRANSFER_SHARDS", 2)
    gateway_host: str = env("GATEWAY_HOST", "127.0.0.1")
    gateway_port: int = env("GATEWAY_PORT", 10001)
    gateway_node_id: str = env("GATEWAY_NODE_ID", "")
    # Origins whose pages may call the REST API (CORS), comma-separated; "*" = any, as OpenIM's api answers.
    cors_allow_origins: str = env("CORS_ALLOW_ORIGINS", "*")
    # development: secrets generated into the data folder when unset, short ones only warned about;
    # production (the default): unset or short secrets stop every process that signs or checks tokens.
    app_env: str = env("APP_ENV", "production")
    # Set explicitly to production: the start-up checks' warnings (app/ops/preflight.py) refuse to start.
    app_env_explicit: bool = field(default_factory=lambda: bool(os.environ.get("APP_ENV", "").strip()))
    # The environment's values only: read the secrets through secrets() (environment, else the data folder).
    token_secret_env: str = env("TOKEN_SECRET", "")
    admin_secret_env: str = env("ADMIN_SECRET", "")
    token_ttl_seconds: int = env("TOKEN_TTL_SECONDS", 90 * 24 * 3600)
    # `python -m app up`'s embedded Redis/MongoDB data and its generated secrets.
    data_dir: str = env("APP_DATA_DIR", str(ROOT / ".data"))
    # Offline push: which provider (webhook | jpush | getui | fcm) and how hard to try.
    offline_push_provider: str = env("OFFLINE_PUSH_PROVIDER", "webhook")
    offline_push_url: str = env("OFFLINE_PUSH_URL", "")
    offline_push_timeout: float = env("OFFLINE_PUSH_TIMEOUT", 5.0)
    offline_push_max_retries: int = env("OFFLINE_PUSH_MAX_RETRIES", 5)
    offline_push_backoff: float = env("OFFLINE_PUSH_BACKOFF", 1.0)
    offline_push_backoff_max: float = env("OFFLINE_PUSH_BACKOFF_MAX", 60.0)
    jpush_url: str = env("JPUSH_URL", "https://api.jpush.cn/v3/push")
    jpush_app_key: str = env("JPUSH_APP_KEY", "")
    jpush_master_secret: str = env("JPUSH_MASTER_SECRET", "")
    jpush_apns_production: bool = env("JPUSH_APNS_PRODUCTION", False)
    getui_url: str = env("GETUI_URL", "https://restapi.getui.com/v2")
    getui_app_id: str = env("GETUI_APP_ID", "")
    getui_app_key: str = env("GETUI_APP_KEY", "")
    getui_master_secret: str = env("GETUI_MASTER_SECRET", "")
    getui_channel_id: str = env("GETUI_CHANNEL_ID", "")
    getui_channel_name: str = env("GETUI_CHANNEL_NAME", "")
    fcm_url: str = env("FCM_URL", "https://fcm.googleapis.com")
    fcm_project_id: str = env("FCM_PROJECT_ID", "")
    # A service-account key file (JSON) for FCM: OAuth2 tokens minted and refreshed with google-auth; its
    # project_id serves when FCM_PROJECT_ID is empty. Without it: FCM_TOKEN_PROVIDER, then FCM_ACCESS_TOKEN.
    fcm_credentials_file: str = env("FCM_CREDENTIALS_FILE", "")
    # An OAuth2 access token for FCM, or "module:function" returning one.
    fcm_access_token: str = env("FCM_ACCESS_TOKEN", "")
    fcm_token_provider: str = env("FCM_TOKEN_PROVIDER", "")
    # OpenIM's webhooks (callbacks): the base URL each callback is POSTed under (<url>/<callbackCommand>),
    # then either OpenIM's webhooks.yml (WEBHOOKS_CONFIG, a path; its `url` is used when WEBHOOK_URL is
    # empty) or a comma-separated list of callbacks to enable, all with WEBHOOK_TIMEOUT seconds and
    # WEBHOOK_FAILED_CONTINUE. After-callbacks are Celery tasks retried WEBHOOK_MAX_RETRIES times.
    webhook_url: str = env("WEBHOOK_URL", "")
    webhooks_config_file: str = env("WEBHOOKS_CONFIG", "")
    webhooks_enabled: str = env("WEBHOOKS_ENABLED", "")
    webhook_timeout: float = env("WEBHOOK_TIMEOUT", 5.0)
    webhook_failed_continue: bool = env("WEBHOOK_FAILED_CONTINUE", True)
    webhook_max_retries: int = env("WEBHOOK_MAX_RETRIES", 5)
    # The gateway groups SendMsg requests per shard for this long before one broker publish.
    batch_linger_ms: float = env("BATCH_LINGER_MS", 3.0)
    batch_linger_max_ms: float = env("BATCH_LINGER_MAX_MS", 30.0)
    batch_max_msgs: int = env("BATCH_MAX_MSGS", 200)
    max_content_bytes: int = env("MAX_CONTENT_BYTES", 40 * 1024)
    # A sender may revoke its own message this long after sending it (0: any time); group owners,
    # group admins and admin tokens are not bound by it.
    revoke_window_seconds: int = env("REVOKE_WINDOW_SECONDS", 24 * 3600)
    # /msg/batch_send_msg hands its messages to the pipeline this many at a time.
    batch_send_chunk: int = env("BATCH_SEND_CHUNK", 500)
    # At most this many receivers in one /msg/batch_send_msg.
    batch_send_max_receivers: int = env("BATCH_SEND_MAX_RECEIVERS", 10000)
    # Which shards this transfer worker consumes ("0,2"); empty means all of them.
    transfer_worker_shards_raw: str = env("TRANSFER_WORKER_SHARDS", "")
    # "i/n": this is the i-th of n transfer processes sharing those shards (e.g. 1/2 and 2/2, so that one
    # batch's Redis and MongoDB round trips overlap another shard's); empty: one process for all of them.
    transfer_part: str = env("TRANSFER_PART", "")
    # Redis broker: a dead worker's unacknowledged messages come back after this long (celeryconfig),
    # and journaled hand-offs older than this are run by the consumers' sweepers (app/pipeline/journal.py).
    broker_visibility_timeout: int = env("BROKER_VISIBILITY_TIMEOUT", 120)
    # Celery (celeryconfig.py): prefetch multiplier, and task events for Flower (0 turns them off).
    worker_prefetch: int = env("WORKER_PREFETCH", 4)
    celery_task_events: bool = env("CELERY_TASK_EVENTS", True)
    flower_port: int = env("FLOWER_PORT", 5555)  # Flower's port in the Procfile (which reads it itself)
    transfer_lease_seconds: int = env("TRANSFER_LEASE_SECONDS", 15)
    # Redis broker: a leased transfer worker takes up to this many more gateway batches waiting in
    # each of its shard queues into the run of the one it received (1: no merging).
    transfer_merge_max: int = env("TRANSFER_MERGE_MAX", 16)
    # ... and a run of at least TRANSFER_LINGER_MIN_MESSAGES, while the gateways' flushes come at
    # most TRANSFER_LINGER_MAX_MS apart, waits up to that long for the next flush to join it: fewer
    # runs for less CPU, at the price of push latency (0, the default: never; README "Session 21").
    transfer_linger_max_ms: float = env("TRANSFER_LINGER_MAX_MS", 0.0)
    transfer_linger_min_messages: int = env("TRANSFER_LINGER_MIN_MESSAGES", 12)
    seq_block_single: int = env("SEQ_BLOCK_SINGLE", 50)
    seq_block_group: int = env("SEQ_BLOCK_GROUP", 100)
    seq_block_growth_max: int = env("SEQ_BLOCK_GROWTH_MAX", 16)
    # OpenIM's multiLogin.policy: 0 no kick, 1 kick same platform, 4 same class, 5 PC and one other.
    multi_login_policy: int = env("MULTI_LOGIN_POLICY", 1)
    # Server websocket pings; a socket with no frame and no pong for the read deadline is closed.
    gateway_ping_seconds: float = env("GATEWAY_PING_SECONDS", 20.0)
    gateway_read_deadline_seconds: float = env("GATEWAY_READ_DEADLINE_SECONDS", 60.0)
    # Requests per second per connection (0 = unlimited) and the burst above that rate.
    gateway_rate_limit: float = env("GATEWAY_RATE_LIMIT", 100.0)
    gateway_rate_burst: float = env("GATEWAY_RATE_BURST", 200.0)
    gateway_max_conns: int = env("GATEWAY_MAX_CONNS", DEFAULT_MAX_CONNS)
    # A SendMsg not accepted by the broker within this long is answered "send it again" (SERVER_INTERNAL).
    gateway_publish_timeout_seconds: float = env("GATEWAY_PUBLISH_TIMEOUT_SECONDS", 15.0)
    # Every socket (websockets, REST, and those still sending their HTTP request) counts; beyond this a
    # new one is closed at once. A request must arrive within the handshake timeout; past the pending
    # cap the oldest socket still waiting for its request is closed to make room.
    gateway_max_sockets: int = field(default_factory=_default_max_sockets, metadata={"env": "GATEWAY_MAX_SOCKETS"})
    gateway_handshake_timeout: float = env("GATEWAY_HANDSHAKE_TIMEOUT", 10.0)
    gateway_max_pending_sockets: int = env("GATEWAY_MAX_PENDING_SOCKETS", 1000)
    # A client whose unsent frames exceed this many bytes is not reading: it is dropped and goes offline.
    gateway_outbox_max_bytes: int = env("GATEWAY_OUTBOX_MAX_BYTES", 4 * 1024 * 1024)
    # Dead letters (app/pipeline/dead_letters.py): newest entries kept per stage, and the largest payload kept
    # whole (a larger one is kept truncated, for reading only).
    dead_letters_max: int = env("DEAD_LETTERS_MAX", 10_000)
    dead_letters_max_payload_bytes: int = env("DEAD_LETTERS_MAX_PAYLOAD_BYTES", 1024 * 1024)
    # 1 runs the persist worker on the solo pool. Celery's threads pool was seen to stall for minutes
    # after a broker restart (fault suite, both brokers), holding every hand-off that came meanwhile.
    persist_concurrency: int = env("PERSIST_CONCURRENCY", 1)
    # The solo persist worker merges up to this many hand-offs (its prefetch), or what arrived within
    # the linger after the first, into one write per slot document (app/tasks/batching.py).
    persist_batch_max: int = env("PERSIST_BATCH_MAX", 1000)
    # SecantusDB rewrites a whole slot document per write: at a steady 1,000 msg/s 5 s instead of 2 s
    # halved its CPU (README "Session 14"); readers are served from the cache meanwhile.
    persist_batch_linger_ms: float = env("PERSIST_BATCH_LINGER_MS", 5000.0)
    # ... or until no hand-off came for this long (the end of a burst: no reason to wait on).
    persist_batch_quiet_ms: float = env("PERSIST_BATCH_QUIET_MS", 250.0)
    metrics_host: str = env("METRICS_HOST", "127.0.0.1")
    metrics_port: int = env("METRICS_PORT", 0)
    log_level: str = env("LOG_LEVEL", "INFO")
    # Celery's own line per task (received, succeeded) at INFO: 7-12% of a worker's CPU at 200 msg/s
    # (py-spy), so they are off unless asked for; failures and retries are logged either way.
    log_task_lines: bool = env("LOG_TASK_LINES", False)
    # Allocations before Python's cyclic collector runs in the gateway and workers (app/ops/runtime.py;
    # Python's default is 700, which cost the gateway 14% of its CPU); 0 keeps Python's defaults.
    gc_gen0_threshold: int = env("GC_GEN0_THRESHOLD", 50_000)
    # The gateway freezes what survives each young collection, so that full collections do not
    # rescan every held connection (1.4 s at 10,000); app/ops/runtime.py GcWatch.
    gc_freeze_survivors: bool = env("GC_FREEZE_SURVIVORS", True)
    # ... and every this many seconds collects everything once, frozen objects included (0: never)
    gc_thaw_seconds: float = env("GC_THAW_SECONDS", 3600.0)
    # json: one JSON object per line (operationID, conversationID, seq ... as fields); text: plain lines
    log_format: str = env("LOG_FORMAT", "json")

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
