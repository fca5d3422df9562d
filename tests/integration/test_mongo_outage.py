"""P1 through a MongoDB outage: messages acknowledged while it is down are all stored once it is back."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from app.cli.client import text_of
from app.core.constants import WEB
from app.core.conversation import single_conversation_id
from app.ops import embedded
from tests.conftest import BROKER_REDIS_URL, WORK_DIR
from tests.integration.helpers import eventually, login, stored_in_mongo
from tests.stack import Stack


class OwnMongo:
    """A SecantusDB this module can stop and start again on the same port and data."""

    def __init__(self) -> None:
        self.port = embedded.free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/openim_outage?retryWrites=false"
        self.dir = WORK_DIR / "mongo-outage"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = embedded.start_mongo(self.port, self.dir, WORK_DIR / "mongo-outage.log")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def outage_stack(infra: dict[str, str]) -> Iterator[tuple[Stack, OwnMongo]]:
    own = OwnMongo()
    own.start()
    redis.Redis.from_url(BROKER_REDIS_URL).flushdb()
    env = {**infra, "MONGO_URL": own.url, "BROKER_URL": BROKER_REDIS_URL}
    try:
        with Stack(WORK_DIR / "stack-mongo-outage", env) as running:
            yield running.start(), own
    finally:
        own.stop()


def test_messages_sent_while_mongodb_is_down_are_all_stored_once_it_is_back(
    outage_stack: tuple[Stack, OwnMongo], uid: str
) -> None:
    stack, mongo = outage_stack
    alice, bob = f"alice{uid}", f"bob{uid}"
    warm, fresh = single_conversation_id(alice, bob), single_conversation_id(alice, f"carol{uid}")
    a = login(stack, alice)
    b = login(stack, bob, WEB)
    try:
        first = a.send_text(bob, "before the outage")["clientMsgID"]
        assert [m["clientMsgID"] for m in b.pushed_msgs(1)] == [first]
        assert eventually(lambda: len(stored_in_mongo(mongo.url, warm)) == 1)
        assert b.pull_range(warm, 1, 1)["Msgs"][0]["clientMsgID"] == first  # the gateway now knows bob is in it

        mongo.stop()
        during = [a.send_text(bob, f"during {i}")["clientMsgID"] for i in range(40)]  # within the cached block
        # bob's recent messages keep flowing from the Redis cache while MongoDB is down
        pushed = b.pushed_msgs(40, timeout=60)
        assert [m["clientMsgID"] for m in pushed] == during
        cached = b.pull_range(warm, 2, 41)["Msgs"]
        assert [text_of(m) for m in cached] == [f"during {i}" for i in range(40)]
        # a new conversation needs MongoDB (its records, its first seq block): accepted all the same,
        # and stored once MongoDB is back
        to_carol = [a.send_text(f"carol{uid}", f"new conversation {i}")["clientMsgID"] for i in range(160)]

        time.sleep(7)  # longer than the driver's 5 s server selection: writes must fail and be retried
        mongo.start()
        want_warm = [first, *during]
        assert eventually(lambda: [c for _, c in stored_in_mongo(mongo.url, warm)] == want_warm, timeout=120)
        assert [s for s, _ in stored_in_mongo(mongo.url, warm)] == list(range(1, 42))
        assert eventually(lambda: [c for _, c in stored_in_mongo(mongo.url, fresh)] == to_carol, timeout=120)
        assert [s for s, _ in stored_in_mongo(mongo.url, fresh)] == list(range(1, 161))  # no gap, no duplicate
        # counted once the write returned, a moment after it became visible
        assert eventually(lambda: stack.metric("persist", "msg_insert_mongo_success_total") >= 201)
        assert stack.metric("persist", "msg_insert_mongo_failed_total") >= 1  # the outage was felt, and retried
        assert stack.metric("transfer", "seq_allocated_total") >= 201
        assert stack.metric("gateway", "msg_accepted_total") >= 201
    finally:
        a.close()
        b.close()
    assert all(stack.alive().values())
