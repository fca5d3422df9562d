"""Gateway -> broker: one Celery message per shard batch on the shard's transfer queue, every
shard's batch of a flush journaled and published together.

User messages arrive here through the gateway's batcher; system messages (group
notifications) are published directly, one batch per shard, through the same acceptance records.
"""

from __future__ import annotations

from typing import Any

from kombu.utils.functional import retry_over_time

from app.celery_app import celery_app
from app.config import settings
from app.core.conversation import shard_of, transfer_queue
from app.pipeline import journal
from app.pipeline.backoff import TRANSIENT_ERRORS
from app.pipeline.journal import JOURNALING
from app.store.redis import client_acks, lean, recv_opts
from app.store.redis.client import get_broker_redis, get_redis
from app.ws import recv_rules
from app.ws.acceptance import Ack, LaterSettlements, Pending, accept_batches, encode_ack


def publish_batches(batches: dict[str, list[dict[str, Any]]]) -> dict[str, Exception]:
    """Transfer batches, one per queue; returns the queues whose publish failed. On a Redis broker all
    of them journaled in one round trip and published in one pipeline, through a broker blip as
    Celery's own publish is (task_publish_retry_policy), all failing together; on RabbitMQ Celery's
    send_task each, which declares the queue and waits for the publisher confirm. A failed publish is
    not journaled: the client is told to resend."""
    if not JOURNALING:
        failures: dict[str, Exception] = {}
        for queue, docs in batches.items():
            try:
                celery_app.send_task(
                    "transfer.batch", args=[docs], kwargs={"journal": None}, queue=queue, **journal.shown([docs], None)
                )
            except Exception as exc:
                failures[queue] = exc
        return failures
    sends = [("transfer.batch", [docs], queue) for queue, docs in batches.items()]
    retry_over_time(
        journal.publish_journaled,
        TRANSIENT_ERRORS,
        args=(celery_app, sends),
        kwargs={"batches": True},
        **(celery_app.conf.task_publish_retry_policy or {}),
    )
    return {}


def publish_docs(queue: str, docs: list[dict[str, Any]]) -> None:
    """One transfer batch on a shard queue (redrive, the stage benches); raises if it was not published."""
    failures = publish_batches({queue: docs})
    if failures:
        raise failures[queue]


def publish_shard_docs(docs: dict[int, list[dict[str, Any]]]) -> dict[int, Exception]:
    """Every shard's transfer batch of a flush; returns the shards whose publish failed."""
    queues = {shard: transfer_queue(shard) for shard in docs}
    failures = publish_batches({queues[shard]: shard_docs for shard, shard_docs in docs.items()})
    return {shard: failures[queue] for shard, queue in queues.items() if queue in failures}


def accept_shard_batches(
    batches: dict[int, list[Pending]], settlements: LaterSettlements | None = None
) -> dict[int, list[Ack | Exception]]:
    """Messages a receiver's options refuse are answered with the refusal; the rest are published.

    The receivers' cached options and the clientMsgID reservations of every shard's batch are read
    in one round trip (a refused message's fresh reservation is dropped again), so a flush costs the
    gateway this round trip and the publish before its clients are answered. With `settlements`
    (the gateway's) the confirmations of earlier flushes go first in that round trip, and this
    flush's wait there for the next; without, they are written before this returns."""
    labelled = [(shard, item) for shard, batch in batches.items() for item in batch]
    everything = [item for _shard, item in labelled]
    pairs = recv_rules.single_chat_pairs(everything)
    pipe = lean.pipeline(get_redis())
    settled = settlements.queue_on(pipe) if settlements is not None else 0
    recv_opts.queue_cached(pipe, pairs)
    client_acks.queue_reserve(
        pipe, [(p.conversation_id, p.client_msg_id, encode_ack(p.ack, False)) for p in everything]
    )
    replies = pipe.execute()[settled:]
    found = recv_opts.parse_cached(pairs, replies[: len(pairs)])
    existing = client_acks.reserved(replies[len(pairs) :])
    if pairs:
        refusals = recv_rules.decide(everything, recv_rules.receiver_options(pairs, found))
    else:
        refusals = [None] * len(everything)
    kept: dict[int, list[Pending]] = {shard: [] for shard in batches}
    kept_existing: dict[int, list[str | None]] = {shard: [] for shard in batches}
    release: list[tuple[str, str]] = []
    for (shard, item), refusal, reserved in zip(labelled, refusals, existing, strict=True):
        if refusal is None:
            kept[shard].append(item)
            kept_existing[shard].append(reserved)
        elif reserved is None:  # reserved by this batch: a resend is decided again
            release.append((item.conversation_id, item.client_msg_id))
    # with every message refused, this only drops their fresh reservations
    settle_later = settlements.add if settlements is not None else None
    accepted = {
        shard: iter(answers)
        for shard, answers in accept_batches(kept, publish_shard_docs, kept_existing, settle_later, release).items()
    }
    out: dict[int, list[Ack | Exception]] = {shard: [] for shard in batches}
    for (shard, _item), refusal in zip(labelled, refusals, strict=True):
        out[shard].append(refusal if refusal is not None else next(accepted[shard]))
    return out


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
