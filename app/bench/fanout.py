"""`python -m app bench fanout`: push capacity (`bench connections` is app/bench/connections.py).

fanout       recipient deliveries/s of the push stage for a group (default 500 members, half online):
             the group is created in MongoDB and Redis, the online half is registered on two bench
             gateway nodes, and the push task routes committed messages to those nodes' channels,
             where subscribers count the deliveries. Figures printed, never asserted.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from app.core.constants import GROUP_CHAT
from app.core.conversation import group_conversation_id
from app.services import groups
from app.store.mongo import client as mongo
from app.store.redis.client import get_redis
from app.store.redis.keys import push_channel
from app.store.redis.online import set_online


def bench_fanout(members: int = 500, online_fraction: float = 0.5, messages: int = 200, batch: int = 10) -> None:
    from app.tasks.push import push_batch

    mongo.ensure_indexes()
    tag = uuid.uuid4().hex[:6]
    group_id = f"bench-fanout-{tag}"
    users = [f"bf{tag}-{i}" for i in range(members)]
    groups.create(group_id, "bench", users[0], users[1:], "bench")
    nodes = [f"bench-node-{tag}-{n}" for n in range(2)]
    online = users[: int(members * online_fraction)]
    for i, user in enumerate(online):
        set_online(user, 7, nodes[i % 2])
    counted = {"deliveries": 0}
    ready = threading.Event()

    def count_deliveries() -> None:
        pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*[push_channel(n) for n in nodes])
        ready.set()
        for message in pubsub.listen():
            payload = json.loads(message["data"])
            for delivery in payload.get("deliveries", []):
                counted["deliveries"] += len(delivery["users"]) * len(delivery["msgs"])

    threading.Thread(target=count_deliveries, daemon=True).start()
    ready.wait(5)
    conv = group_conversation_id(group_id)
    now = int(time.time() * 1000)
    msgs = [
        {
            "send_id": users[0],
            "recv_id": "",
            "group_id": group_id,
            "session_type": GROUP_CHAT,
            "sender_platform_id": 7,
            "client_msg_id": f"{tag}-{i}",
            "server_msg_id": f"{tag}-{i}",
            "content_type": 101,
            "content": json.dumps({"content": f"fan-out {i}"}),
            "seq": i + 2,
            "send_time": now,
            "options": {"offlinePush": False},  # the offline half is not what this measures
        }
        for i in range(messages)
    ]
    expected = sum(len(online) * len(msgs[i : i + batch]) for i in range(0, messages, batch))
    start = time.perf_counter()
    for i in range(0, messages, batch):
        push_batch.run({conv: msgs[i : i + batch]})
    routed = time.perf_counter() - start
    deadline = time.monotonic() + 30
    while counted["deliveries"] < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    total = time.perf_counter() - start
    print(f"\npush fan-out: group of {members}, {len(online)} online on {len(nodes)} gateway nodes")
    print(f"  {messages} messages in push tasks of {batch}: routed in {routed:.2f}s")
    print(
        f"  {counted['deliveries']} of {expected} recipient deliveries reached the nodes' channels in {total:.2f}s:"
        f" {counted['deliveries'] / total:,.0f} deliveries/s"
    )
