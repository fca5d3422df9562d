"""Gateway -> broker: one Celery message per shard batch on the shard's transfer queue.

User messages arrive here through the gateway's per-shard batcher; system messages (group
notifications) are published directly, one batch per shard, through the same acceptance records.
"""

from __future__ import annotations

from typing import Any

from app.celery_app import celery_app
from app.config import settings
from app.core.conversation import shard_of, transfer_queue
from app.pipeline import journal
from app.pipeline.journal import JOURNALING
from app.store.redis.client import get_broker_redis
from app.ws import recv_rules
from app.ws.acceptance import Ack, Pending, accept_batch


def publish_docs(queue: str, docs: list[dict[str, Any]]) -> None:
    """One transfer batch on a shard queue, journaled first on a Redis broker (a failed publish is
    not journaled: the client is told to resend)."""
    journal.publish(
        queue,
        docs,
        lambda entry: celery_app.send_task("transfer.batch", args=[docs], kwargs={"journal": entry}, queue=queue),
    )


def accept_shard_batch(shard: int, batch: list[Pending]) -> list[Ack | Exception]:
    """Messages a receiver's options refuse are answered with the refusal; the rest are published."""
    queue = transfer_queue(shard)
    refusals = recv_rules.apply(batch)
    kept = [p for p, refusal in zip(batch, refusals, strict=True) if refusal is None]
    answers = iter(accept_batch(kept, lambda docs: publish_docs(queue, docs)) if kept else [])
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
