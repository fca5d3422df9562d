"""How a gateway accepts its shards' batches: reserve each clientMsgID's answer, publish, confirm.

A clientMsgID already answered (a client resend) is answered again with the first answer and not
published again (P2). The transfer stage also dedupes by clientMsgID, for broker redeliveries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.core import compact_json
from app.store.redis import client_acks

log = logging.getLogger(__name__)

K = TypeVar("K")  # what tells a gateway's batches apart: their shard


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


@dataclass
class Plan:
    """What a batch answers (one per message) and which of its messages it publishes."""

    answers: list[Ack]
    to_publish: list[int]


def plan_batch(batch: list[Pending], existing: list[str | None]) -> Plan:
    """Decide from the reservations: a fresh clientMsgID is published under its own answer, one
    answered before keeps that answer (published again when it was never confirmed), and a
    clientMsgID twice in the batch is handled once."""
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
    return Plan(answers, to_publish)


Publish = Callable[[dict[K, list[dict[str, Any]]]], dict[K, Exception]]
"""Publishes each key's (shard's) docs; returns the keys whose publish failed, with the error."""

Confirmed = tuple[str, str, str]  # (conversation, clientMsgID, final answer)
Released = tuple[str, str]  # (conversation, clientMsgID)
Settle = Callable[[list[Confirmed], list[Released]], object]
"""Marks published answers final and drops reservations (client_acks.settle_client_acks)."""


def accept_batches(
    batches: dict[K, list[Pending]],
    publish: Publish[K],
    existing: dict[K, list[str | None]],
    settle_later: Settle | None = None,
    release: list[Released] | None = None,
) -> dict[K, list[Ack | Exception]]:
    """Publish the batches' new messages in one go; returns, per batch and message, its answer or
    the error to report.

    `existing` is what the reservation of each message found (client_acks.reserved). Marking the
    published answers final (and dropping the reservations in `release`) is not needed for the
    answer: an unconfirmed reservation only makes a resend publish again, which transfer dedupes.
    So the gateway hands it to `settle_later` (LaterSettlements: with its next flush) and answers
    its clients a round trip sooner; without it, they are settled before this returns.
    A batch whose publish failed releases its fresh reservations at once: its clients resend."""
    plans = {key: plan_batch(batch, existing[key]) for key, batch in batches.items()}
    docs = {key: [batches[key][i].doc for i in plan.to_publish] for key, plan in plans.items() if plan.to_publish}
    try:
        failures = publish(docs) if docs else {}
    except Exception as exc:
        failures = dict.fromkeys(docs, exc)
    out: dict[K, list[Ack | Exception]] = {}
    confirmed: list[tuple[str, str, str]] = []
    failed: set[tuple[str, str]] = set()
    for key, plan in plans.items():
        batch = batches[key]
        error = failures.get(key)
        if error is None:
            out[key] = list(plan.answers)
            confirmed += [
                (batch[i].conversation_id, batch[i].client_msg_id, encode_ack(plan.answers[i], True))
                for i in plan.to_publish
            ]
            continue
        log.error("publishing %d messages failed: %r", len(plan.to_publish), error)
        lost = {(batch[i].conversation_id, batch[i].client_msg_id) for i in plan.to_publish}
        failed |= lost
        # every copy of a failed clientMsgID in this batch fails with it
        out[key] = [
            error if (p.conversation_id, p.client_msg_id) in lost else plan.answers[i] for i, p in enumerate(batch)
        ]
    released = list(release or [])
    if failed:
        try:
            client_acks.settle_client_acks([], [*failed, *released])
            released = []
        except Exception:
            log.warning("could not release clientMsgID reservations", exc_info=True)
    if confirmed or released:
        (settle_later or settle)(confirmed, released)
    return out


def settle(confirmed: list[Confirmed], released: list[Released]) -> None:
    try:
        client_acks.settle_client_acks(confirmed, released)
    except Exception:
        # The messages are accepted; an unconfirmed reservation only means a resend publishes again.
        log.warning("could not confirm clientMsgID reservations", exc_info=True)


class LaterSettlements:
    """A gateway's confirmations, sent in its next flush's round trip to Redis, queued before that
    flush's reservations (so a resend in that flush finds its first answer final), or on their own
    once they waited `delay_seconds` without a flush: a flush costs one round trip fewer (its own
    settle was a third of them). `call_later(seconds, fn)` arms the timer (gevent.spawn_later)."""

    def __init__(self, delay_seconds: float, call_later: Callable[[float, Callable[[], None]], object]) -> None:
        self.delay_seconds = delay_seconds
        self._call_later = call_later
        self._confirmed: list[Confirmed] = []
        self._released: list[Released] = []
        self._since = 0.0  # when the oldest pending one was added
        self._armed = False

    def add(self, confirmed: list[Confirmed], released: list[Released]) -> None:
        if not self._confirmed and not self._released:
            self._since = time.monotonic()
        self._confirmed += confirmed
        self._released += released
        if not self._armed:
            self._armed = True
            self._call_later(self.delay_seconds, self._on_timer)

    def queue_on(self, pipe: Any) -> int:
        """Queue what is pending on `pipe`, first; returns how many replies it adds."""
        confirmed, released = self._take()
        return client_acks.queue_settle(pipe, confirmed, released)

    def flush(self) -> None:
        """Write what is pending now (the gateway's shutdown)."""
        confirmed, released = self._take()
        if confirmed or released:
            settle(confirmed, released)

    def _take(self) -> tuple[list[Confirmed], list[Released]]:
        taken = self._confirmed, self._released
        self._confirmed, self._released = [], []
        return taken

    def _on_timer(self) -> None:
        self._armed = False
        if not self._confirmed and not self._released:
            return  # a flush took them
        waited = time.monotonic() - self._since
        if waited < self.delay_seconds:  # added after a flush took the earlier ones
            self._armed = True
            self._call_later(self.delay_seconds - waited, self._on_timer)
            return
        self.flush()
