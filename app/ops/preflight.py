"""Checks every process makes at start: what it depends on is set up so that nothing acknowledged can
be lost, and the processes agree with each other.

Pure checks take the facts (gathered by `gather`, the one place with I/O) and return Findings in plain
words. A finding is a warning, or a refusal when APP_ENV=production is set explicitly (`strict`);
findings marked `always` refuse in any setting (the stack cannot work so). Facts that cannot be read
(a dependency not up yet) are reported as such and never stop a process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import urlparse

from app.config import MIN_SECRET_BYTES, Settings

log = logging.getLogger(__name__)

# Words of development, test and example secrets (OpenIM's config ships openIM123): never in production.
DEV_SECRET_WORDS = ("test", "example", "changeme", "change-me", "placeholder", "openim123", "dev-", "-dev", "default")
MIN_DISTINCT_SECRET_CHARS = 8
PROCESS_KINDS = ("gateway", "transfer", "persist", "push", "offline")


@dataclass(frozen=True)
class Finding:
    check: str  # a short name: broker-persistence, secrets, transfer-shards, mongo-indexes, ...
    message: str
    always: bool = False  # refuses even outside production


@dataclass
class Facts:
    """What `gather` read; None where it could not be read (listed in `unreadable`)."""

    broker_is_redis: bool = False
    broker_aof: bool | None = None  # appendonly on the broker's Redis
    broker_is_data_redis: bool | None = None  # the same server (same run_id) as the data Redis
    recorded_shards: int | None = None  # TRANSFER_SHARDS as recorded in Redis by the first process
    missing_indexes: list[str] | None = None
    unreadable: list[str] = field(default_factory=list)


def is_redis_url(url: str) -> bool:
    return urlparse(url).scheme in ("redis", "rediss", "unix")


def check_broker(cfg: Settings, facts: Facts) -> list[Finding]:
    out: list[Finding] = []
    if cfg.redis_cluster and not cfg.broker_url:
        out.append(
            Finding(
                "broker",
                "REDIS_CLUSTER=1 but BROKER_URL is unset, so the broker would be the cluster: Celery cannot use a"
                " Redis Cluster. Set BROKER_URL to RabbitMQ (recommended) or to a single Redis server.",
                always=True,
            )
        )
        return out
    if not facts.broker_is_redis or facts.broker_aof is not False:
        return out
    if facts.broker_is_data_redis:
        out.append(
            Finding(
                "broker-persistence",
                "the broker is the data Redis and that Redis keeps no append-only file (appendonly no): a restart,"
                " a FLUSHALL or an eviction of the data takes every queued message with it (measured: 40 of 402"
                " acknowledged messages lost). Give the broker its own Redis with appendonly yes, or use RabbitMQ.",
            )
        )
    else:
        out.append(
            Finding(
                "broker-persistence",
                "the broker's Redis keeps no append-only file (appendonly no): a restart loses every queued"
                " message. Set appendonly yes (appendfsync everysec or always) there, or use RabbitMQ.",
            )
        )
    return out


def secret_problem(value: str) -> str | None:
    """Why `value` is not a production secret, or None."""
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"shorter than {MIN_SECRET_BYTES} bytes"
    lowered = value.lower()
    words = [word for word in DEV_SECRET_WORDS if word in lowered]
    if words:
        return f"a development or example value (it contains {words[0]!r})"
    if len(set(value)) < MIN_DISTINCT_SECRET_CHARS:
        return f"made of fewer than {MIN_DISTINCT_SECRET_CHARS} different characters (a placeholder?)"
    return None


def check_secrets(token_secret: str, admin_secret: str) -> list[Finding]:
    out = []
    for name, value in (("TOKEN_SECRET", token_secret), ("ADMIN_SECRET", admin_secret)):
        problem = secret_problem(value)
        if problem:
            advice = "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            out.append(Finding("secrets", f"{name} is {problem}: set a random one ({advice})."))
    if token_secret and token_secret == admin_secret:
        out.append(Finding("secrets", "TOKEN_SECRET and ADMIN_SECRET are the same: set two different ones."))
    return out


def check_transfer_shards(configured: int, recorded: int | None) -> list[Finding]:
    """The gateways hash a conversation to crc32 % TRANSFER_SHARDS and the transfer workers consume
    shards by the same number: processes that disagree split a conversation over two queues (order
    lost, P3) or leave queues nobody consumes."""
    if recorded is None or recorded == configured:
        return []
    return [
        Finding(
            "transfer-shards",
            f"TRANSFER_SHARDS is {configured} here but {recorded} where the other processes started: every"
            " gateway and transfer worker must use the same value. To change it on purpose, stop the gateways,"
            " let the transfer queues drain, stop the workers, run `python -m app preflight --record-shards`"
            " with the new value, then start everything with it.",
            always=True,
        )
    ]


def check_indexes(missing: list[str] | None) -> list[Finding]:
    if not missing:
        return []
    return [
        Finding(
            "mongo-indexes",
            f"MongoDB lacks indexes {', '.join(missing)}: unique ones keep one document per id (a duplicate"
            " would split a conversation's messages). Run `python -m app preflight --create-indexes` (transfer"
            " and persist workers create them at start).",
        )
    ]


def evaluate(cfg: Settings, facts: Facts, secrets: tuple[str, str] | None = None) -> list[Finding]:
    """Every finding for this process: `secrets` (token, admin) only where the process uses them."""
    findings = check_broker(cfg, facts)
    if secrets is not None:
        findings += check_secrets(*secrets)
    findings += check_transfer_shards(cfg.transfer_shards, facts.recorded_shards)
    findings += check_indexes(facts.missing_indexes)
    return findings


def refusals(cfg: Settings, findings: list[Finding]) -> list[Finding]:
    strict = cfg.app_env_explicit and cfg.app_env == "production"
    return [f for f in findings if f.always or strict]


def refusal_message(kind: str, refused: list[Finding]) -> str:
    lines = [f"refusing to start the {kind}:"] + [f"  - [{f.check}] {f.message}" for f in refused]
    return "\n".join(lines)


# --- the I/O: reading the facts ------------------------------------------------------------------


def gather(cfg: Settings, kind: str, record_shards: bool = True) -> Facts:
    """Read what the checks need; record TRANSFER_SHARDS in the data Redis when none is recorded."""
    from app.store.mongo import client as mongo
    from app.store.redis import client as redis_client
    from app.store.redis.keys import transfer_shards_key

    facts = Facts(broker_is_redis=is_redis_url(cfg.effective_broker_url))
    if cfg.redis_cluster and not cfg.broker_url:
        return facts  # refused whatever else holds
    if facts.broker_is_redis:
        try:
            broker = redis_client.get_broker_redis()
            facts.broker_aof = bool(int(broker.info("persistence").get("aof_enabled", 0)))
            # A cluster's nodes are never the broker (Celery would not run on one); else compare servers.
            same = not cfg.redis_cluster and (
                redis_client.get_redis().info("server").get("run_id") == broker.info("server").get("run_id")
            )
            facts.broker_is_data_redis = same
        except Exception as exc:
            facts.unreadable.append(f"the broker's Redis ({exc.__class__.__name__}: {exc})")
    if kind in ("gateway", "transfer"):  # the two that hash conversations to shards
        try:
            data = redis_client.get_redis()
            if record_shards:
                data.set(transfer_shards_key(), cfg.transfer_shards, nx=True)
            raw = data.get(transfer_shards_key())
            facts.recorded_shards = int(raw) if raw is not None else None
        except Exception as exc:
            facts.unreadable.append(f"the recorded TRANSFER_SHARDS ({exc.__class__.__name__}: {exc})")
    try:
        have = mongo.existing_indexes()
        facts.missing_indexes = [
            f"{collection}({','.join(fields)}{' unique' if unique else ''})"
            for collection, fields, unique in mongo.INDEXES
            if (collection, fields, unique) not in have
        ]
    except Exception as exc:
        facts.unreadable.append(f"MongoDB's indexes ({exc.__class__.__name__}: {exc})")
    return facts


def run(cfg: Settings, kind: str, secrets: tuple[str, str] | None = None) -> list[Finding]:
    """The start-up check of one process: logs every finding; on refusals exits (SystemExit: status 1,
    the message on stderr)."""
    facts = gather(cfg, kind)
    for what in facts.unreadable:
        log.warning("start-up check: could not read %s; not checked", what)
    findings = evaluate(cfg, facts, secrets)
    refused = refusals(cfg, findings)
    for finding in findings:
        if finding not in refused:
            log.warning("start-up check [%s]: %s (refused with APP_ENV=production)", finding.check, finding.message)
    if refused:
        message = refusal_message(kind, refused)
        log.critical(message)
        raise SystemExit(message)
    return findings
