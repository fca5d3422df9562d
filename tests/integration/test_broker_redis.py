"""The Redis broker's transport (app/pipeline/broker_redis.py) against the tests' real Redis."""

from __future__ import annotations

import json
import time

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
        # the body is JSON text in the envelope (the journal's script placed the entry id in it)
        assert "body_encoding" not in props
        body = json.loads(envelope["body"])
        # Celery's protocol 2 body: args, kwargs, embed; the kwargs name the journal entry to remove
        assert body[0] == args and body[1] == {"journal": [queue, entry_id]}
        assert set(body[2]) >= {"callbacks", "errbacks", "chain", "chord"}
        assert headers["kwargsrepr"] == repr({"journal": [queue, entry_id]})
        assert journal.entries(queue) == [(entry_id, args)]
        # and kombu's consumer reads it as the task message it is
        with celery_app.connection_for_read() as conn, conn.SimpleQueue(queue) as simple:
            message = simple.get(timeout=5)
            message.ack()
        assert message.headers["task"] == "push.batch"
        assert message.payload == [args, {"journal": [queue, entry_id]}, body[2]]
    finally:
        broker.delete(queue, journal_key(queue))


def test_finished_hand_offs_journal_entries_are_removed_together_a_moment_later(
    infra: dict[str, str], uid: str
) -> None:
    queues = [f"later_a_{uid}", f"later_b_{uid}"]
    broker = get_broker_redis()
    removals = journal.LaterRemovals(0.3)
    try:
        ids = {queue: [journal.append(queue, [n]) for n in range(3)] for queue in queues}
        removals.add([[queues[0], ids[queues[0]][0]], None, [queues[1], ids[queues[1]][2]]])
        assert broker.xlen(journal_key(queues[0])) == 3  # not at once
        deadline = time.monotonic() + 10
        while broker.xlen(journal_key(queues[0])) == 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [e for e, _ in journal.entries(queues[0])] == ids[queues[0]][1:]
        assert [e for e, _ in journal.entries(queues[1])] == ids[queues[1]][:2]
        # what a consumer's own broker round trip carries along: one XDEL per queue, first
        removals.add([[queues[0], ids[queues[0]][1]], [queues[1], ids[queues[1]][0]], [queues[0], ids[queues[0]][2]]])
        pipe = broker.pipeline(transaction=False)
        taken = removals.queue_on(pipe)
        pipe.llen(queues[0])
        assert pipe.execute() == [2, 1, 0]
        assert len(taken) == 3 and journal.entries(queues[0]) == []
        assert [e for e, _ in journal.entries(queues[1])] == ids[queues[1]][1:2]
        # a removal that failed (the caller's pipeline did not run) is given back and done by the next
        removals.give_back([[queues[1], ids[queues[1]][1]]])
        removals.flush()
        assert journal.entries(queues[1]) == []
        # what is not an entry id (a task message written by hand) is refused alone: it would fail
        # the XDEL of every entry of its queue
        kept = journal.append(queues[0], ["kept"])
        removals.add([[queues[0], "not-an-id"], [queues[0], kept], [queues[0]]])
        removals.flush()
        assert journal.entries(queues[0]) == []
        assert removals.take() == []
    finally:
        broker.delete(*(journal_key(queue) for queue in queues))
