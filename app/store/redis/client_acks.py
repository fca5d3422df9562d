"""The gateway's answers to clientMsgIDs (P2: a resend is answered as the first send was)."""

from __future__ import annotations

from app.store.redis.client import get_redis
from app.store.redis.keys import CLIENT_MSG_TTL_SECONDS, client_ack_key


def reserve_client_acks(entries: list[tuple[str, str, str]]) -> list[str | None]:
    """(conversation, clientMsgID, pending answer) -> None where reserved now, else the value already there."""
    pipe = get_redis().pipeline(transaction=False)
    for conv, cid, value in entries:
        pipe.set(client_ack_key(conv, cid), value, nx=True, ex=CLIENT_MSG_TTL_SECONDS)
        pipe.get(client_ack_key(conv, cid))
    replies = pipe.execute()
    out: list[str | None] = []
    for i in range(len(entries)):
        reserved, current = replies[2 * i], replies[2 * i + 1]
        out.append(None if reserved else (None if current is None else str(current)))
    return out


def settle_client_acks(confirmed: list[tuple[str, str, str]], released: list[tuple[str, str]]) -> None:
    """Mark published answers final; drop reservations whose publish failed so a resend can retry."""
    pipe = get_redis().pipeline(transaction=False)
    for conv, cid, value in confirmed:
        pipe.set(client_ack_key(conv, cid), value, ex=CLIENT_MSG_TTL_SECONDS)
    for conv, cid in released:
        pipe.delete(client_ack_key(conv, cid))
    pipe.execute()
