"""Dead letters: the one home of everything a pipeline stage could not handle (P7).

Each stage (transfer, persist, push, offline, and the journal sweeper) dead-letters the smallest unit
it could not handle, usually one message, with its reason, and goes on with the rest of its batch.
An entry keeps what is needed to run it again once the cause is fixed (`redrive`): a transfer entry
the message docs; the others the task's arguments and queue.

Stored in the data Redis as one stream per stage, `DEAD_LETTERS:<stage>`, trimmed to the newest
DEAD_LETTERS_MAX entries, so a flood of bad input cannot fill Redis. An entry's id is
`<stage>:<stream id>` (e.g. `persist:1764500000000-0`). Operators use
`python -m app dead-letters {list,show,redrive,drop}`; `dead_letters_total{stage}` counts them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from app.config import settings
from app.ops import metrics
from app.store.redis.client import get_redis
from app.store.redis.keys import dead_letters_key

log = logging.getLogger(__name__)

STAGES = ("transfer", "persist", "push", "offline", "webhooks", "journal")
# Newest entries kept per stage; older ones are trimmed as new ones arrive.
MAX_ENTRIES = settings.dead_letters_max
# A payload larger than this is kept as its first bytes only (shown, not redrivable): the bound in
# entries is only a bound in bytes if each entry is bounded too.
MAX_PAYLOAD_BYTES = settings.dead_letters_max_payload_bytes
MAX_REASON_CHARS = 500
MAX_ERROR_CHARS = 2000


class UnknownEntry(KeyError):
    """No dead letter has this id (never existed, dropped, redriven, or trimmed)."""


@dataclass
class DeadLetter:
    id: str
    stage: str
    reason: str
    error: str
    time: int  # ms since the epoch
    conversation: str
    payload: Any
    details: dict[str, Any] = field(default_factory=dict)
    redrivable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown dead-letter stage {stage!r}; one of {', '.join(STAGES)}")


def _dumps(value: Any) -> str | None:
    """JSON text of `value` (ASCII, so lone surrogates survive Redis), or None when it has none."""
    try:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"


def encode_fields(
    stage: str,
    reason: str,
    payload: Any,
    conversation: str = "",
    error: BaseException | str | None = None,
    details: dict[str, Any] | None = None,
    now_ms: int | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> dict[str, str]:
    """The stream fields of one entry. Never raises for what the payload holds: a dead letter is
    what is left when a message is unreadable, so it must take anything."""
    _check_stage(stage)
    error_text = error if isinstance(error, str) else (_safe_repr(error) if error is not None else "")
    raw = _dumps(payload)
    redrivable = raw is not None and len(raw) <= max_payload_bytes
    if raw is None:
        raw = json.dumps({"unencodable": _safe_repr(payload)[:max_payload_bytes]})
    elif not redrivable:
        raw = json.dumps({"truncated": raw[:max_payload_bytes]})
    return {
        "stage": stage,
        "reason": str(reason)[:MAX_REASON_CHARS],
        "error": error_text[:MAX_ERROR_CHARS],
        "time": str(now_ms if now_ms is not None else int(time.time() * 1000)),
        "conversation": str(conversation or ""),
        "payload": raw,
        "details": _dumps(details or {}) or "{}",
        "redrivable": "1" if redrivable else "0",
    }


def decode_entry(stream_id: str, fields: dict[str, str]) -> DeadLetter:
    stage = fields.get("stage", "")
    return DeadLetter(
        id=f"{stage}:{stream_id}",
        stage=stage,
        reason=fields.get("reason", ""),
        error=fields.get("error", ""),
        time=int(fields.get("time") or 0),
        conversation=fields.get("conversation", ""),
        payload=json.loads(fields.get("payload") or "null"),
        details=json.loads(fields.get("details") or "{}"),
        redrivable=fields.get("redrivable", "1") == "1",
    )


def parse_id(entry_id: str) -> tuple[str | None, str]:
    """(stage, stream id) of `<stage>:<stream id>`; stage None for a bare stream id."""
    stage, sep, stream_id = entry_id.strip().rpartition(":")
    if not sep:
        return None, stream_id
    _check_stage(stage)
    return stage, stream_id


def put(
    stage: str,
    reason: str,
    payload: Any,
    conversation: str = "",
    error: BaseException | str | None = None,
    details: dict[str, Any] | None = None,
) -> str:
    """Keep one unit a stage could not handle; returns its id. Raises only when Redis does (callers
    on the pipeline's path wrap it in backoff.until_done, so an outage never loses a dead letter)."""
    fields = encode_fields(stage, reason, payload, conversation, error, details)
    stream_id = get_redis().xadd(dead_letters_key(stage), fields, maxlen=MAX_ENTRIES, approximate=False)  # type: ignore[arg-type]
    entry_id = stage + ":" + str(stream_id)
    metrics.DEAD_LETTERS.labels(stage=stage).inc()
    log.error(
        "dead letter %s: %s",
        entry_id,
        fields["reason"],
        extra={"conversationID": fields["conversation"] or None},
    )
    return entry_id


def _stream_id_sort_key(entry: DeadLetter) -> tuple[int, int]:
    ms, _, seq = entry.id.rpartition(":")[2].partition("-")
    return int(ms), int(seq or 0)


def list_entries(stage: str | None = None, limit: int = 50) -> list[DeadLetter]:
    """The newest `limit` entries of one stage or of all, newest first."""
    stages = [stage] if stage else list(STAGES)
    for name in stages:
        _check_stage(name)
    pipe = get_redis().pipeline(transaction=False)
    for name in stages:
        pipe.xrevrange(dead_letters_key(name), count=limit)
    entries = [decode_entry(str(sid), fields) for rows in pipe.execute() for sid, fields in rows]
    entries.sort(key=_stream_id_sort_key, reverse=True)
    return entries[:limit]


def show(entry_id: str) -> DeadLetter | None:
    stage, stream_id = parse_id(entry_id)
    r = get_redis()
    for name in [stage] if stage else list(STAGES):
        try:
            rows: list[tuple[str, dict[str, str]]] = r.xrange(  # type: ignore[assignment]
                dead_letters_key(name), min=stream_id, max=stream_id, count=1
            )
        except Exception as exc:  # a malformed stream id: Redis says so
            if "Invalid stream ID" in str(exc):
                return None
            raise
        if rows:
            return decode_entry(str(rows[0][0]), rows[0][1])
    return None


def drop(entry_id: str) -> bool:
    entry = show(entry_id)
    if entry is None:
        return False
    stage, stream_id = parse_id(entry.id)
    return bool(get_redis().xdel(dead_letters_key(str(stage)), stream_id))


def count(stage: str) -> int:
    _check_stage(stage)
    return int(get_redis().xlen(dead_letters_key(stage)))


def transfer_payload(msgs: list[Any]) -> dict[str, Any]:
    return {"msgs": msgs}


def task_payload(queue: str, args: list[Any]) -> dict[str, Any]:
    """A task to send again: persist.batch on `persist`, push.batch on `push`, offline.push on `offline`,
    webhooks.after on `webhooks`."""
    return {"queue": queue, "args": args}
