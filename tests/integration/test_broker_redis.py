"""The Redis broker's transport (app/pipeline/broker_redis.py) against the tests' real Redis."""

from __future__ import annotations

from app.celery_app import celery_app
from app.pipeline.broker_redis import Channel, Transport


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
