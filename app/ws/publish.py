"""Gateway -> broker: one Celery message per shard batch on the shard's transfer queue, every
shard's batch of a flush journaled and published together.

User messages arrive here through the gateway's batcher; system messages (group
notifications) are published directly, one batch per shard, through the same acceptance records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.celery_app import celery_app
from app.config import settings
from app.core.conversation import shard_of, transfer_queue
from app.pipeline import journal
from app.pipeline.backoff import TRANSIENT_ERRORS
from app.pipeline.journal import JOURNALING
from app.store.redis import client_acks, recv_opts
from app.store.redis.client import get_broker_redis, get_redis
from app.ws import recv_rules
from app.ws.acceptance import Ack, Pending, accept_batches, encode_ack, run_now


def publish_docs(queue: str, docs: list[dict[str, Any]]) -> None:
    """One transfer batch on a shard queue, journaled first on a Redis broker (a failed publish is
    not journaled: the client is told to resend)."""
    journal.publish(queue, docs, lambda entry: send_transfer_batch(queue, docs, entry))


def send_transfer_batch(queue: str, docs: list[dict[str, Any]], entry: list[str] | None) -> None:
    """On a Redis broker the lean publish of the transfer's hand-offs, with Celery's publish retries
    (a broker blip is ridden out here, not answered as a failure); on RabbitMQ Celery's send_task,
    which declares the queue and waits for the publisher confirm."""
    if entry is None:
        celery_app.send_task(
            "transfer.batch", args=[docs], kwargs={"journal": entry}, queue=queue, **journal.shown([docs], entry)
        )
        return
    with celery_app.producer_or_acquire() as producer:
        journal.publish_task_message(producer, celery_app, "transfer.batch", [docs], entry, queue, retry=True)


def publish_shard_docs(docs: dict[int, list[dict[str, Any]]]) -> dict[int, Exception]:
    """Every shard's transfer batch; returns the shards whose publish failed. On a Redis broker all
    of them journaled in one round trip and published in one pipeline, through a broker blip as
    Celery's own publish is (task_publish_retry_policy); on RabbitMQ one confirmed send_task each."""
    if not JOURNALING:
        failures: dict[int, Exception] = {}
        for shard, shard_docs in docs.items():
            try:
                send_transfer_batch(transfer_queue(shard), shard_docs, None)
            except Exception as exc:
                failures[shard] = exc
        return failures
    sends = [("transfer.batch", [shard_docs], transfer_queue(shard)) for shard, shard_docs in docs.items()]
    policy = celery_app.conf.task_publish_retry_policy or {}
    attempt = 0
    while True:
        try:
            journal.publish_journaled(celery_app, sends, batches=True)
            return {}
        except TRANSIENT_ERRORS:
            if attempt >= policy.get("max_retries", 3):
                raise
            step = policy.get("interval_start", 0) + policy.get("interval_step", 0.2) * attempt
            time.sleep(min(policy.get("interval_max", 0.2), step))  # cooperative: the gateway is gevent-patched
            attempt += 1


def accept_shard_batches(
    batches: dict[int, list[Pending]], settle_later: Callable[[Callable[[], None]], object] = run_now
) -> dict[int, list[Ack | Exception]]:
    """Messages a receiver's options refuse are answered with the refusal; the rest are published.

    The receivers' cached options and the clientMsgID reservations of every shard's batch are read
    in one round trip (a refused message's fresh reservation is dropped again), so a flush costs the
    gateway this round trip and the publish before its clients are answered."""
    everything = [item for batch in batches.values() for item in batch]
    pairs = recv_rules.single_chat_pairs(everything)
    pipe = get_redis().pipeline(transaction=False)
    recv_opts.queue_cached(pipe, pairs)
    client_acks.queue_reserve(
        pipe, [(p.conversation_id, p.client_msg_id, encode_ack(p.ack, False)) for p in everything]
    )
    replies = pipe.execute()
    found = recv_opts.parse_cached(pairs, replies[: len(pairs)])
    existing = client_acks.reserved(replies[len(pairs) :])
    if pairs:
        refusals = recv_rules.decide(everything, recv_rules.receiver_options(pairs, found))
    else:
        refusals = [None] * len(everything)
    kept: dict[int, list[Pending]] = {}
    kept_existing: dict[int, list[str | None]] = {}
    release: list[tuple[str, str]] = []
    i = 0
    for shard, batch in batches.items():
        kept[shard], kept_existing[shard] = [], []
        for item in batch:
            if refusals[i] is None:
                kept[shard].append(item)
                kept_existing[shard].append(existing[i])
            elif existing[i] is None:  # reserved by this batch: a resend is decided again
                release.append((item.conversation_id, item.client_msg_id))
            i += 1
    # with every message refused, this only drops their fresh reservations (settle_later)
    accepted = accept_batches(kept, publish_shard_docs, kept_existing, settle_later, release)
    out: dict[int, list[Ack | Exception]] = {}
    i = 0
    for shard, batch in batches.items():
        answers = iter(accepted[shard])
        out[shard] = []
        for _item in batch:
            refusal = refusals[i]
            out[shard].append(refusal if refusal is not None else next(answers))
            i += 1
    return out


def accept_shard_batch(
    shard: int, batch: list[Pending], settle_later: Callable[[Callable[[], None]], object] = run_now
) -> list[Ack | Exception]:
    """`accept_shard_batches` for one shard's batch."""
    return accept_shard_batches({shard: batch}, settle_later)[shard]


def queue_depths() -> dict[str, int]:
    """Messages waiting in each pipeline queue: LLEN on a Redis broker, a passive declare on RabbitMQ."""
    queues = [transfer_queue(k) for k in range(settings.transfer_shards)] + ["persist", "push", "offline", "webhooks"]
    if JOURNALING:  # a Redis broker
        pipe = get_broker_redis().pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        return dict(zip(queues, (int(n) for n in pipe.execute()), strict=True))
    depths: dict[str, int] = {}
    with celery_app.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in queues:
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except Exception:  # not declared yet; a failed passive declare also closes the channel
                channel = conn.channel()
    return depths


def publish_now(pending: list[Pending]) -> None:
    """Publish without the linger (admin actions); raises if any message was not accepted."""
    by_shard: dict[int, list[Pending]] = {}
    for item in pending:
        by_shard.setdefault(shard_of(item.conversation_id, settings.transfer_shards), []).append(item)
    for answers in accept_shard_batches(by_shard).values():
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
