"""Gateway -> broker: one Celery message per shard batch on the shard's transfer queue.

User messages arrive here through the gateway's per-shard batcher; system messages (group
notifications) are published directly, one batch per shard, through the same acceptance records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.celery_app import celery_app
from app.config import settings
from app.core.conversation import shard_of, transfer_queue
from app.pipeline import journal
from app.pipeline.journal import JOURNALING
from app.store.redis import client_acks, recv_opts
from app.store.redis.client import get_broker_redis, get_redis
from app.ws import recv_rules
from app.ws.acceptance import Ack, Pending, accept_batch, encode_ack, run_now


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


def accept_shard_batch(
    shard: int, batch: list[Pending], settle_later: Callable[[Callable[[], None]], object] = run_now
) -> list[Ack | Exception]:
    """Messages a receiver's options refuse are answered with the refusal; the rest are published.

    The receivers' cached options and the clientMsgID reservations are read in one round trip (a
    refused message's fresh reservation is dropped again), so a batch costs the gateway this round
    trip and the publish before its clients are answered."""
    queue = transfer_queue(shard)
    pairs = recv_rules.single_chat_pairs(batch)
    pipe = get_redis().pipeline(transaction=False)
    recv_opts.queue_cached(pipe, pairs)
    client_acks.queue_reserve(pipe, [(p.conversation_id, p.client_msg_id, encode_ack(p.ack, False)) for p in batch])
    replies = pipe.execute()
    found = recv_opts.parse_cached(pairs, replies[: len(pairs)])
    existing = client_acks.reserved(replies[len(pairs) :])
    refusals = recv_rules.decide(batch, recv_rules.receiver_options(pairs, found)) if pairs else [None] * len(batch)
    kept = [i for i, refusal in enumerate(refusals) if refusal is None]
    release = [
        (batch[i].conversation_id, batch[i].client_msg_id)
        for i, refusal in enumerate(refusals)
        if refusal is not None and existing[i] is None  # reserved by this batch: a resend is decided again
    ]
    # with every message refused, this only drops their fresh reservations (settle_later)
    answers = iter(
        accept_batch(
            [batch[i] for i in kept],
            lambda docs: publish_docs(queue, docs),
            existing=[existing[i] for i in kept],
            settle_later=settle_later,
            release=release,
        )
    )
    return [refusal if refusal is not None else next(answers) for refusal in refusals]


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
    for shard, batch in by_shard.items():
        for answer in accept_shard_batch(shard, batch):
            if isinstance(answer, Exception):
                raise answer
