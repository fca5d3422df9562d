"""The gateway's answers to clientMsgIDs (P2: a resend is answered as the first send was)."""

from __future__ import annotations

from typing import Any

from app.store.redis import lean
from app.store.redis.client import get_redis
from app.store.redis.keys import CLIENT_MSG_TTL_SECONDS, client_ack_key

REPLIES_PER_ENTRY = 2


def queue_reserve(pipe: Any, entries: list[tuple[str, str, str]]) -> None:
    """Queue the reservations on `pipe` (the gateway runs them in the same round trip as its other
    reads of a batch); `reserved(replies)` reads their REPLIES_PER_ENTRY replies per entry."""
    for conv, cid, value in entries:
        pipe.set(client_ack_key(conv, cid), value, nx=True, ex=CLIENT_MSG_TTL_SECONDS)
        pipe.get(client_ack_key(conv, cid))


def reserved(replies: list[Any]) -> list[str | None]:
    """Per entry: None where reserved now, else the value already there."""
    out: list[str | None] = []
    for i in range(0, len(replies), REPLIES_PER_ENTRY):
        was_set, current = replies[i], replies[i + 1]
        out.append(None if was_set else (None if current is None else str(current)))
    return out


def reserve_client_acks(entries: list[tuple[str, str, str]]) -> list[str | None]:
    """(conversation, clientMsgID, pending answer) -> None where reserved now, else the value already there."""
    pipe = lean.pipeline(get_redis())
    queue_reserve(pipe, entries)
    return reserved(pipe.execute())


def settle_client_acks(confirmed: list[tuple[str, str, str]], released: list[tuple[str, str]]) -> None:
    """Mark published answers final; drop reservations whose publish failed so a resend can retry."""
    pipe = lean.pipeline(get_redis())
    queue_settle(pipe, confirmed, released)
    pipe.execute()


def queue_settle(pipe: Any, confirmed: list[tuple[str, str, str]], released: list[tuple[str, str]]) -> int:
    """`settle_client_acks` queued on `pipe`; returns how many replies it adds."""
    for conv, cid, value in confirmed:
        pipe.set(client_ack_key(conv, cid), value, ex=CLIENT_MSG_TTL_SECONDS)
    for conv, cid in released:
        pipe.delete(client_ack_key(conv, cid))
    return len(confirmed) + len(released)
