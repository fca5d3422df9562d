"""Transfer under faults, through real processes: P2 (one seq per clientMsgID), P3 (order), P4 (no reuse).

Each scenario runs its own stack, since it kills or wipes things.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import redis

from app.celery_app import celery_app
from app.cli.client import ClientError, ImClient
from app.config import settings
from app.core.constants import WEB
from app.core.conversation import shard_of, shards_of_part, single_conversation_id, transfer_queue
from app.pipeline import dead_letters, journal
from app.store.mongo import client as mongo
from app.store.mongo import messages
from app.store.redis import msg_cache
from tests.conftest import AMQP_URL, BROKER_REDIS_URL, STACK_BROKER_URL, WORK_DIR, flush_data_redis
from tests.factories import stored_msg
from tests.integration.helpers import eventually, login
from tests.integration.test_rabbitmq_broker import rabbitmq_reachable
from tests.stack import Stack


def send_reliably(client: ImClient, recv: str, text: str, cid: str, attempts: int = 30) -> dict[str, Any]:
    """What an OpenIM client does: resend the same clientMsgID until the gateway accepts it."""
    for attempt in range(attempts):
        try:
            return client.send_text(recv, text, client_msg_id=cid)
        except (ClientError, TimeoutError):
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError(f"{cid} was never accepted")


class Senders:
    """Several users, each sending numbered messages to their own peer in its own conversation."""

    def __init__(
        self, stack: Stack, count: int, per_sender: int, pause: float = 0.01, pairs: list[tuple[str, str]] | None = None
    ) -> None:
        tag = uuid.uuid4().hex[:6]
        self.pairs = pairs or [(f"s{tag}-{i}", f"r{tag}-{i}") for i in range(count)]
        self.per_sender = per_sender
        self.pause = pause
        self.stack = stack
        self.acked: dict[str, list[str]] = {single_conversation_id(a, b): [] for a, b in self.pairs}
        self.progress = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=pair) for pair in self.pairs]

    def _run(self, sender: str, receiver: str) -> None:
        client = login(self.stack, sender)
        conv = single_conversation_id(sender, receiver)
        try:
            for i in range(self.per_sender):
                cid = f"{sender}-{i}"
                send_reliably(client, receiver, f"{i}", cid)
                with self._lock:
                    self.acked[conv].append(cid)
                    self.progress += 1
                time.sleep(self.pause)
        finally:
            client.close()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def wait_progress(self, fraction: float, timeout: float = 120) -> None:
        target = int(len(self.pairs) * self.per_sender * fraction)
        assert eventually(lambda: self.progress >= target, timeout=timeout), f"stuck at {self.progress}/{target}"

    def join(self, timeout: float = 180) -> None:
        for t in self._threads:
            t.join(timeout)
            assert not t.is_alive(), "a sender never finished"


def pulled_seqs(stack: Stack, user: str, conv: str, expected: list[str], timeout: float = 90) -> dict[str, list[int]]:
    """clientMsgID -> every seq it holds in the conversation, read back through the gateway once
    every expected clientMsgID is visible (or the timeout passed)."""
    client = login(stack, user, WEB)
    try:

        def read_all() -> dict[str, list[int]]:
            newest = client.newest_seqs().get(conv, 0)
            found: dict[str, list[int]] = {}
            for begin in range(1, newest + 1, 100):
                for msg in client.pull_range(conv, begin, min(newest, begin + 99), 100)["Msgs"]:
                    if int(msg.get("status", 0)) == 4:
                        continue  # an allocated but never committed seq (P5 placeholder)
                    found.setdefault(msg["clientMsgID"], []).append(int(msg["seq"]))
            return found

        deadline = time.monotonic() + timeout
        found = read_all()
        while not set(expected) <= set(found) and time.monotonic() < deadline:
            time.sleep(0.5)
            found = read_all()
        return found
    finally:
        client.close()


def assert_one_seq_each_in_order(stack: Stack, senders: Senders) -> None:
    for (sender, _receiver), (conv, acked) in zip(senders.pairs, senders.acked.items(), strict=True):
        assert len(acked) == senders.per_sender
        found = pulled_seqs(stack, sender, conv, acked)
        doubled = {cid: seqs for cid, seqs in found.items() if len(seqs) != 1}
        assert not doubled, f"P2: clientMsgIDs with several seqs in {conv}: {doubled}"
        assert set(found) == set(acked), f"P1: acknowledged messages missing from {conv}"
        seqs = [found[cid][0] for cid in acked]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"P3: {conv} out of acceptance order"

        assert eventually(partial(persisted_exactly, conv, acked), timeout=90), f"P1: {conv} not persisted once"


def persisted_exactly(conv: str, acked: list[str]) -> bool:
    docs = mongo.get_db().msg.find({"doc_id": {"$regex": f"^{conv}:"}})
    cids = [slot["msg"]["client_msg_id"] for d in docs for slot in d["msgs"] if slot["msg"]]
    return sorted(cids) == sorted(acked)


def stack_for(name: str, env: dict[str, str]) -> Callable[[], Iterator[Stack]]:
    def fixture() -> Iterator[Stack]:
        with Stack(WORK_DIR / name, env) as running:
            yield running.start()

    return fixture


@pytest.fixture
def redis_broker_stack(infra: dict[str, str]) -> Iterator[Stack]:
    redis.Redis.from_url(BROKER_REDIS_URL).flushdb()
    env = {**infra, "BROKER_URL": BROKER_REDIS_URL, "TRANSFER_LEASE_SECONDS": "3"}
    yield from stack_for(f"stack-kill-redis-{uuid.uuid4().hex[:6]}", env)()


@pytest.fixture
def amqp_broker_stack(infra: dict[str, str]) -> Iterator[Stack]:
    if not rabbitmq_reachable():
        pytest.skip(f"no RabbitMQ answers at {AMQP_URL}")
    yield from stack_for(f"stack-kill-amqp-{uuid.uuid4().hex[:6]}", {**infra, "BROKER_URL": AMQP_URL})()


def test_same_client_msg_id_three_times_gets_one_seq_and_one_answer(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    a = login(stack, alice)
    try:
        answers = [a.send_text(bob, "only once", client_msg_id=f"dup-{uid}") for _ in range(3)]
        assert len({(ans["serverMsgID"], ans["sendTime"]) for ans in answers}) == 1
        a.send_text(bob, "next", client_msg_id=f"next-{uid}")
        found = pulled_seqs(stack, alice, conv, [f"dup-{uid}", f"next-{uid}"])
        assert found == {f"dup-{uid}": [1], f"next-{uid}": [2]}
        stored = eventually(lambda: mongo.get_db().msg.find_one({"doc_id": f"{conv}:0"}))
        assert stored["msgs"][0]["msg"]["server_msg_id"] == answers[0]["serverMsgID"]
    finally:
        a.close()


@pytest.mark.rabbitmq
def test_transfer_worker_sigkill_on_rabbitmq(amqp_broker_stack: Stack) -> None:
    stack = amqp_broker_stack
    stack.start_worker("transfer-standby", "transfer")  # single-active-consumer keeps it idle
    senders = Senders(stack, count=4, per_sender=60)
    senders.start()
    senders.wait_progress(0.3)
    stack.kill("transfer")
    senders.join()
    assert_one_seq_each_in_order(stack, senders)


def test_transfer_worker_sigkill_on_redis_broker_with_standby(redis_broker_stack: Stack) -> None:
    stack = redis_broker_stack
    stack.start_worker("transfer-standby", "transfer", ready_marker="waiting for")
    senders = Senders(stack, count=4, per_sender=60)
    senders.start()
    senders.wait_progress(0.3)
    # the standby waited instead of consuming beside the live worker
    ran = 'task_seconds_count{task="transfer.batch"}'
    assert stack.metric("transfer-standby", ran) == 0
    stack.kill("transfer")
    stack.wait_for_log("transfer-standby", "took the lease", timeout=30)
    senders.join()
    assert_one_seq_each_in_order(stack, senders)
    # the standby did the rest: replayed what the killed worker held, and/or consumed the queue
    replayed = "journaled batches left by a previous consumer" in stack.log_text("transfer-standby")
    assert replayed or stack.metric("transfer-standby", ran) >= 1


def test_redis_data_wiped_mid_stream_seqs_keep_increasing(redis_broker_stack: Stack) -> None:
    stack = redis_broker_stack
    senders = Senders(stack, count=2, per_sender=500, pause=0.0)
    senders.start()
    senders.wait_progress(0.4)
    flush_data_redis()  # the data Redis loses every key (the broker lives apart)
    senders.join()
    assert_one_seq_each_in_order(stack, senders)
    # seqs were never reused: MongoDB's block allocator is above everything handed out
    for conv in senders.acked:
        doc = mongo.get_db().seq.find_one({"conversation_id": conv})
        assert doc is not None and doc["max_seq"] >= senders.per_sender and doc["min_seq"] == 0


def test_a_batch_mixing_a_repeat_with_new_messages_persists_all_of_them(stack: Any, uid: str) -> None:
    """What a redelivered batch carrying newer messages too looks like to the transfer stage."""
    sender, receiver = f"rep{uid}", f"new{uid}"
    conv = single_conversation_id(sender, receiver)
    queue = transfer_queue(shard_of(conv, settings.transfer_shards))
    now = int(time.time() * 1000)
    m = [stored_msg(sender, receiver, i, now) for i in range(4)]
    celery_app.send_task("transfer.batch", args=[m[:2]], queue=queue)
    assert eventually(lambda: msg_cache.get_visible_max_seqs([conv]).get(conv) == 2)
    celery_app.send_task("transfer.batch", args=[[m[1], m[2], m[3]]], queue=queue)
    assert eventually(lambda: msg_cache.get_visible_max_seqs([conv]).get(conv) == 4)

    def stored() -> list[str]:
        doc = mongo.get_db().msg.find_one({"doc_id": f"{conv}:0"}) or {"msgs": []}
        return [slot["msg"]["client_msg_id"] for slot in doc["msgs"] if slot and slot.get("msg")]

    assert eventually(lambda: stored() == [f"{sender}-{i}" for i in range(4)], timeout=30), stored()
    refused = [e for stage in ("transfer", "persist") for e in dead_letters.list_entries(stage, 10_000)]
    assert not any(e.conversation == conv for e in refused)


def test_two_transfer_processes_share_the_shards_by_transfer_part(redis_broker_stack: Stack) -> None:
    """TRANSFER_PART=1/2 and 2/2 consume disjoint halves of the shards, each under its own lease:
    with only the first running, the second half's conversations wait in their queues; once the
    second starts, every message has one seq, in acceptance order."""
    stack = redis_broker_stack
    stack.terminate("transfer")
    stack.start_worker("transfer_a", "transfer", env={"TRANSFER_PART": "1/2"})
    first_half = set(shards_of_part(list(range(settings.transfer_shards)), "1/2"))
    tag = uuid.uuid4().hex[:6]
    by_shard: dict[int, tuple[str, str]] = {}
    for i in range(1000):  # one conversation on every shard
        pair = (f"pa{tag}-{i}", f"pb{tag}-{i}")
        by_shard.setdefault(shard_of(single_conversation_id(*pair), settings.transfer_shards), pair)
        if len(by_shard) == settings.transfer_shards:
            break
    senders = Senders(stack, count=len(by_shard), per_sender=20, pause=0.0, pairs=list(by_shard.values()))
    senders.start()
    senders.join()

    mine = {conv for conv in senders.acked if shard_of(conv, settings.transfer_shards) in first_half}
    others = set(senders.acked) - mine
    assert mine and others
    visible = partial(msg_cache.get_visible_max_seqs, sorted(senders.acked))
    assert eventually(lambda: all(visible()[conv] == 20 for conv in mine), timeout=60), visible()
    time.sleep(2)  # the second half stays queued while its process is not running
    assert all(visible()[conv] is None for conv in others), visible()

    stack.start_worker("transfer_b", "transfer", env={"TRANSFER_PART": "2/2"})
    assert_one_seq_each_in_order(stack, senders)


def test_a_batch_only_the_journal_holds_is_committed_once_the_consumer_reconnects(stack: Any, uid: str) -> None:
    """kombu's Redis transport pops a batch (BRPOP) before it records it as unacknowledged: a batch
    popped as the broker connection broke is only in the journal (the fault suite's broker restart
    lost one so). The transfer worker replays its journal after every reconnection, not only when it
    takes shards over."""
    import psutil

    sender, receiver = f"jr{uid}", f"jp{uid}"
    conv = single_conversation_id(sender, receiver)
    queue = transfer_queue(shard_of(conv, settings.transfer_shards))
    msgs = [stored_msg(sender, receiver, i, int(time.time() * 1000)) for i in range(3)]
    journal.append(queue, msgs)  # journaled and published, then lost in flight: only the journal has it
    time.sleep(2)
    assert msg_cache.get_visible_max_seqs([conv])[conv] is None, "nothing else runs a journaled batch this soon"

    broker_port = int(STACK_BROKER_URL.rsplit(":", 1)[1].split("/")[0])
    worker = psutil.Process(stack.procs["transfer"].pid)
    ports = {c.laddr.port for c in worker.net_connections(kind="tcp") if c.raddr and c.raddr.port == broker_port}
    assert ports, "the transfer worker holds no broker connection"
    admin = redis.Redis.from_url(STACK_BROKER_URL)
    for port in ports:  # the broker drops the worker's connections, as a broker restart does
        try:
            admin.execute_command("CLIENT", "KILL", "ADDR", f"127.0.0.1:{port}")
        except redis.ResponseError:
            pass  # that connection closed meanwhile
    assert eventually(lambda: msg_cache.get_visible_max_seqs([conv])[conv] == 3, timeout=60)
    assert eventually(lambda: len(messages.find_msgs(conv, [1, 2, 3])) == 3, timeout=30)
    assert "left by a previous consumer or connection" in stack.log_text("transfer")
