"""The Redis broker's transport (app/pipeline/broker_redis.py) against the tests' real Redis."""

from __future__ import annotations

import base64
import json

from app.celery_app import celery_app
from app.pipeline import journal
from app.pipeline.broker_redis import Channel, Transport
from app.store.redis.client import get_broker_redis
from app.store.redis.keys import journal_key
from app.tasks.push import push_batch


def test_a_channel_publishes_through_one_client_until_its_pool_is_rebuilt(infra: dict[str, str], uid: str) -> None:
    with celery_app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first  # kombu alone builds one per publish, record and ack
        queue = f"broker_redis_{uid}"
        with conn.Producer() as producer:
            for n in range(3):
                producer.publish({"n": n}, routing_key=queue, declare=[conn.SimpleQueue(queue).queue])
        with conn.SimpleQueue(queue) as simple:
            got = [simple.get(timeout=5) for _ in range(3)]
            for message in got:
                message.ack()
        assert sorted(m.payload["n"] for m in got) == [0, 1, 2]
        channel._disconnect_pools()  # what kombu does after a broker outage
        assert channel._create_client() is not first
        assert channel._create_client().connection_pool is channel.pool


def test_a_hand_off_is_celerys_own_task_message_on_its_queue(infra: dict[str, str], uid: str) -> None:
    queue = f"hand_off_{uid}"
    args = [{f"si_a_{uid}": [{"seq": 1, "content": "é", "send_id": "a"}]}]
    broker = get_broker_redis()
    try:
        journal.send_many([(push_batch, args, queue)])
        raws = broker.lrange(queue, 0, -1)
        assert len(raws) == 1  # published on the queue itself (kombu's anonymous exchange)
        envelope = json.loads(raws[0])
        entry_id = journal.last_id(queue)
        headers, props = envelope["headers"], envelope["properties"]
        assert envelope["content-type"] == "application/json"
        assert headers["task"] == "push.batch" and headers["id"] and headers["lang"] == "py"
        assert headers["argsrepr"] == "[<1 arguments>]"  # what Flower shows (journal.shown)
        assert props["delivery_mode"] == 2 and props["delivery_info"]["routing_key"] == queue
        body = json.loads(base64.b64decode(envelope["body"]))
        # Celery's protocol 2 body: args, kwargs, embed; the kwargs name the journal entry to remove
        assert body[0] == args and body[1] == {"journal": [queue, entry_id]}
        assert set(body[2]) >= {"callbacks", "errbacks", "chain", "chord"}
        assert journal.entries(queue) == [(entry_id, args)]
    finally:
        broker.delete(queue, journal_key(queue))
