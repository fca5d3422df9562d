"""A transfer worker's run takes the gateway batches waiting in its shard queues (Redis broker,
TRANSFER_MERGE_MAX): order kept per conversation (P3), one seq each (P2), a bad message set aside
alone (P7), a broker message that is not a journaled batch left to run on its own, in its place."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from app.celery_app import celery_app
from app.config import settings
from app.core.conversation import shard_of, single_conversation_id, transfer_queue
from app.pipeline import dead_letters
from app.store.redis import msg_cache
from app.store.redis.client import get_broker_redis
from app.store.redis.keys import journal_key
from app.tasks.transfer import replay_journal
from app.ws.publish import publish_docs, publish_shard_docs
from tests.factories import stored_msg
from tests.integration.helpers import eventually

RAN = 'task_seconds_count{task="transfer.batch"}'


def pair_on_shard(uid: str, shard: int, tag: str) -> tuple[str, str, str]:
    """A sender, receiver and their conversation that hashes to `shard`."""
    for i in range(10_000):
        sender, receiver = f"{tag}{i}s{uid}", f"{tag}{i}r{uid}"
        conv = single_conversation_id(sender, receiver)
        if shard_of(conv, settings.transfer_shards) == shard:
            return sender, receiver, conv
    raise AssertionError("no conversation on that shard")


def cached_order(conv: str, count: int) -> list[str]:
    """clientMsgIDs of seqs 1..count as the cache holds them."""
    cached = msg_cache.get_cached_msgs(conv, range(1, count + 1))
    return [cached[s]["client_msg_id"] for s in sorted(cached)]


def test_waiting_batches_run_together_in_order_a_bad_one_alone(stack: Any, uid: str) -> None:
    # two conversations on the same shard, one on the other: the worker consumes both queues
    a_send, a_recv, conv_a = pair_on_shard(uid, 0, "a")
    b_send, b_recv, conv_b = pair_on_shard(uid, 0, "b")
    c_send, c_recv, conv_c = pair_on_shard(uid, 1 % settings.transfer_shards, "c")
    q0, q1 = transfer_queue(0), transfer_queue(1 % settings.transfer_shards)
    now = int(time.time() * 1000)
    runs_before = stack.metric("transfer", RAN)
    dead_before = {e.id for e in dead_letters.list_entries("transfer", 10_000)}
    worker = stack.procs["transfer"].pid
    os.kill(worker, signal.SIGSTOP)  # the batches queue up behind a busy worker
    try:
        for i in range(30):
            if i == 12:  # a message quarantine refuses, in a batch of its own, between good ones
                publish_docs(q0, [{"client_msg_id": f"bad-{uid}", "session_type": 1}])
            if i == 20:  # not journaled (not the gateway's): runs alone, still in its place
                celery_app.send_task("transfer.batch", args=[[stored_msg(a_send, a_recv, 1000, now)]], queue=q0)
            publish_docs(q0, [stored_msg(a_send, a_recv, i, now), stored_msg(b_send, b_recv, i, now)])
            publish_docs(q1, [stored_msg(c_send, c_recv, i, now)])
    finally:
        os.kill(worker, signal.SIGCONT)

    a_ids = [f"{a_send}-{i}" for i in range(20)] + [f"{a_send}-1000"] + [f"{a_send}-{i}" for i in range(20, 30)]
    assert eventually(lambda: cached_order(conv_a, 31) == a_ids, timeout=60), cached_order(conv_a, 31)
    assert eventually(lambda: cached_order(conv_b, 30) == [f"{b_send}-{i}" for i in range(30)])
    assert eventually(lambda: cached_order(conv_c, 30) == [f"{c_send}-{i}" for i in range(30)])
    assert msg_cache.get_visible_max_seqs([conv_a, conv_b, conv_c]) == {conv_a: 31, conv_b: 30, conv_c: 30}

    # 62 broker messages, far fewer runs: each run took what was waiting behind it
    assert eventually(lambda: stack.metric("transfer", RAN) - runs_before >= 4)
    assert stack.metric("transfer", RAN) - runs_before <= 20
    # the bad message alone was set aside; every batch's journal entry is gone once handed off
    dead = [e for e in dead_letters.list_entries("transfer", 10_000) if e.id not in dead_before]
    assert [e.details.get("clientMsgID") for e in dead] == [f"bad-{uid}"]

    def left(queue: str) -> list[Any]:
        return [e for e in get_broker_redis().xrange(journal_key(queue)) or [] if uid in str(e)]

    # removed together, a moment after (journal.LaterRemovals)
    assert eventually(lambda: not left(q0) and not left(q1), timeout=5), (left(q0), left(q1))


def test_a_flush_of_every_shard_is_journaled_as_batches_a_new_holder_replays(stack: Any, uid: str) -> None:
    """What a transfer worker taking over a shard runs from the journal (the batch popped by a killed
    worker lives only there): each shard's entry of a gateway flush is that shard's batch."""
    a_send, a_recv, conv_a = pair_on_shard(uid, 0, "j")
    c_send, c_recv, conv_c = pair_on_shard(uid, 1 % settings.transfer_shards, "k")
    now = int(time.time() * 1000)
    worker = stack.procs["transfer"].pid
    os.kill(worker, signal.SIGSTOP)  # as if it had died holding the batches: only the journal has them
    try:
        failed = publish_shard_docs(
            {
                0: [stored_msg(a_send, a_recv, 0, now), stored_msg(a_send, a_recv, 1, now)],
                1 % settings.transfer_shards: [stored_msg(c_send, c_recv, 0, now)],
            }
        )
        assert failed == {}
        queues = sorted({transfer_queue(0), transfer_queue(1 % settings.transfer_shards)})
        journaled = sum(len(get_broker_redis().xrange(journal_key(queue)) or []) for queue in queues)
        assert journaled >= 2
        assert replay_journal(queues) == journaled  # each entry once, removed before the journal is read again
        assert cached_order(conv_a, 2) == [f"{a_send}-0", f"{a_send}-1"]
        assert cached_order(conv_c, 1) == [f"{c_send}-0"]
        assert not [e for q in queues for e in get_broker_redis().xrange(journal_key(q)) or [] if uid in str(e)]
    finally:
        os.kill(worker, signal.SIGCONT)
    # the worker then takes the same broker messages: recognised by clientMsgID, one seq each (P2)
    assert eventually(
        lambda: not [e for e in get_broker_redis().xrange(journal_key(transfer_queue(0))) or [] if uid in str(e)]
    )
    assert msg_cache.get_visible_max_seqs([conv_a, conv_c]) == {conv_a: 2, conv_c: 1}
