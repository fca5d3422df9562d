"""Transfer, persist and push on a Redis broker: their journal, not kombu's records of unacknowledged
messages, brings back what a dead worker took (app/pipeline/journal.py `without_unacked_records`)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from app.core.conversation import single_conversation_id
from app.store.mongo import client as mongo
from app.store.redis.keys import journal_key
from tests.conftest import BROKER_REDIS_URL
from tests.integration.helpers import eventually, login
from tests.integration.test_transfer_reliability import stack_for
from tests.stack import Stack

KOMBU_RECORD = "HSET unacked "  # kombu recording a delivered message until its ack (its default key)


class KombuRecords:
    """The queues of the messages kombu records as delivered-but-unacknowledged on the broker's
    Redis (`HSET unacked <tag> [<message>, <exchange>, "<queue>"]`), and the queues published to
    (`LPUSH <queue> <message>`), read from MONITOR."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.queues: set[str] = set()
        self.published: set[str] = set()
        self.marker = f"kombu-records-{uuid.uuid4().hex}"
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            for command in monitor.listen():
                text = command["command"]
                if self.marker in text:
                    return
                if command["db"] != self.db:
                    continue
                if text.startswith(KOMBU_RECORD):
                    self.queues.add(text.rsplit(", ", 1)[-1].strip('"]'))
                elif text.startswith("LPUSH "):
                    self.published.add(text.split(" ", 2)[1])

    def __enter__(self) -> KombuRecords:
        self._ready = threading.Event()
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(self.marker)
        self._thread.join(timeout=10)


@pytest.fixture
def lingering_persist_stack(infra: dict[str, str]) -> Iterator[Stack]:
    redis.Redis.from_url(BROKER_REDIS_URL).flushdb()
    env = {
        **infra,
        "BROKER_URL": BROKER_REDIS_URL,
        "BROKER_VISIBILITY_TIMEOUT": "3",
        # persist holds what it took for 4 s before writing: long enough to look, and to kill it
        "PERSIST_BATCH_LINGER_MS": "4000",
    }
    yield from stack_for(f"stack-journaled-{uuid.uuid4().hex[:6]}", env)()


def stored_client_msg_ids(conv: str) -> set[str]:
    found: set[str] = set()
    for doc in mongo.get_db().msg.find({"doc_id": {"$regex": f"^{conv}:"}}):
        found.update(slot["msg"]["client_msg_id"] for slot in doc["msgs"] if slot.get("msg"))
    return found


def test_a_persist_worker_holds_hand_offs_without_kombu_records_and_its_death_loses_none(
    lingering_persist_stack: Stack,
) -> None:
    stack, broker = lingering_persist_stack, redis.Redis.from_url(BROKER_REDIS_URL)
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"ja{tag}", f"jb{tag}"
    conv = single_conversation_id(alice, bob)
    receiver, sender = login(stack, bob), login(stack, alice)
    cids = [f"j{tag}-{n}" for n in range(12)]
    try:
        with KombuRecords(BROKER_REDIS_URL) as records:
            for cid in cids:
                sender.send_text(bob, f"held {cid}", client_msg_id=cid)
            pushed = {m.get("clientMsgID") for m in receiver.pushed_msgs(len(cids), timeout=30)}
            assert pushed >= set(cids), "the push stage did not deliver"
            # the persist worker took the hand-offs off its queue and holds them (lingering), journaled
            assert eventually(lambda: broker.xlen(journal_key("persist")) >= 1 and broker.llen("persist") == 0)
    finally:
        sender.close()
        receiver.close()
    # every stage's queue carried the messages, and kombu recorded none of them as delivered (it
    # would: a MULTI on receipt, another on the ack); the journal stands in for that record
    assert {"persist", "push"} <= records.published, records.published
    assert any(queue.startswith("transfer.") for queue in records.published), records.published
    assert records.queues == set()
    assert stored_client_msg_ids(conv) == set()  # not written yet
    # it dies holding them: the next persist worker runs them from the journal
    stack.kill("persist")
    stack.restart("persist", ["worker", "persist"], " ready.")
    assert eventually(lambda: stored_client_msg_ids(conv) == set(cids), timeout=60), stored_client_msg_ids(conv)
    assert eventually(lambda: broker.xlen(journal_key("persist")) == 0, timeout=30)
