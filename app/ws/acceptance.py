"""How a gateway accepts one shard's batch: reserve each clientMsgID's answer, publish, confirm.

A clientMsgID already answered (a client resend) is answered again with the first answer and not
published again (P2). The transfer stage also dedupes by clientMsgID, for broker redeliveries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.core import compact_json
from app.store.redis import client_acks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ack:
    server_msg_id: str
    send_time: int


@dataclass(frozen=True)
class Pending:
    conversation_id: str
    client_msg_id: str
    ack: Ack
    doc: dict[str, Any]


def encode_ack(ack: Ack, final: bool) -> str:
    return compact_json.dumps({"s": ack.server_msg_id, "t": ack.send_time, "ok": final}).decode()


def decode_ack(raw: str) -> tuple[Ack, bool]:
    body = compact_json.loads(raw)
    return Ack(str(body["s"]), int(body["t"])), bool(body["ok"])


def run_now(settle: Callable[[], None]) -> None:
    settle()


def accept_batch(
    batch: list[Pending],
    publish: Callable[[list[dict[str, Any]]], None],
    existing: list[str | None] | None = None,
    settle_later: Callable[[Callable[[], None]], object] = run_now,
    release: list[tuple[str, str]] | None = None,
) -> list[Ack | Exception]:
    """Publish the batch's new messages; returns, per message, its answer or the error to report.

    `existing` is what the reservation of each message found (client_acks.reserved), when the caller
    reserved them in its own round trip; else they are reserved here. Marking the published answers
    final (and dropping the reservations in `release`) is not needed for the answer: an unconfirmed
    reservation only makes a resend publish again, which transfer dedupes. So the gateway hands it to
    `settle_later` (a greenlet) and answers its clients a round trip sooner."""
    if existing is None:
        existing = client_acks.reserve_client_acks(
            [(p.conversation_id, p.client_msg_id, encode_ack(p.ack, False)) for p in batch]
        )
    answers: list[Ack] = []
    to_publish: list[int] = []
    first_in_batch: dict[tuple[str, str], int] = {}
    for i, (item, raw) in enumerate(zip(batch, existing, strict=True)):
        key = (item.conversation_id, item.client_msg_id)
        if key in first_in_batch:  # the same clientMsgID twice in this batch
            answers.append(answers[first_in_batch[key]])
            continue
        first_in_batch[key] = i
        if raw is None:
            answers.append(item.ack)
            to_publish.append(i)
            continue
        ack, final = decode_ack(raw)
        answers.append(ack)
        if not final:
            # An earlier send was reserved but never confirmed (its gateway died, or it is still in
            # flight): publish again under the first answer; transfer keeps one seq per clientMsgID.
            item.doc["server_msg_id"], item.doc["send_time"] = ack.server_msg_id, ack.send_time
            to_publish.append(i)
    released = list(release or [])
    try:
        if to_publish:
            publish([batch[i].doc for i in to_publish])
    except Exception as exc:
        log.error("publishing %d messages failed: %r", len(to_publish), exc)
        failed = {(batch[i].conversation_id, batch[i].client_msg_id) for i in to_publish}
        try:
            client_acks.settle_client_acks([], [*failed, *released])
        except Exception:
            log.warning("could not release clientMsgID reservations", exc_info=True)
        # every copy of a failed clientMsgID in this batch fails with it
        return [exc if (p.conversation_id, p.client_msg_id) in failed else answers[i] for i, p in enumerate(batch)]
    confirmed = [(batch[i].conversation_id, batch[i].client_msg_id, encode_ack(answers[i], True)) for i in to_publish]
    if confirmed or released:
        settle_later(lambda: settle(confirmed, released))
    return list(answers)


def settle(confirmed: list[tuple[str, str, str]], released: list[tuple[str, str]]) -> None:
    try:
        client_acks.settle_client_acks(confirmed, released)
    except Exception:
        # The messages are accepted; an unconfirmed reservation only means a resend publishes again.
        log.warning("could not confirm clientMsgID reservations", exc_info=True)
