"""A busy transfer run waits for the gateways' next flush and takes it into the run
(TRANSFER_LINGER_*, app/tasks/pace.py), on the real broker Redis: this test process plays the
transfer worker of a queue nobody else consumes."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import settings
from app.core.conversation import single_conversation_id
from app.pipeline import journal as hand_offs
from app.store.redis import msg_cache
from app.store.redis.client import get_broker_redis
from app.store.redis.keys import journal_key
from app.tasks import transfer
from app.tasks.pace import FlushPace
from app.ws.publish import publish_docs
from tests.factories import stored_msg

LINGER_MS = 200.0  # generous: the machine may be busy; the pace below is well inside it


@pytest.fixture
def lone_queue(uid: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    queue = f"transfer.linger-test.{uid}"
    monkeypatch.setattr(
        transfer,
        "settings",
        dataclasses.replace(settings, transfer_linger_max_ms=LINGER_MS, transfer_linger_min_messages=2),
    )
    transfer.merge_from([queue])
    assert transfer._merge_queues == [queue]
    yield queue
    transfer.merge_from([])
    get_broker_redis().delete(queue, journal_key(queue))


def pace_every(seconds: float) -> FlushPace:
    pace = FlushPace()
    now = time.monotonic()
    pace.seen(now - seconds)
    pace.seen(now)
    return pace


def batch(uid: str, first: int, count: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [stored_msg(f"s{uid}", f"r{uid}", i, now) for i in range(first, first + count)]


def client_msg_ids(taken: list[Any]) -> list[str]:
    return [m["client_msg_id"] for msgs, _journal in taken for m in msgs]


def test_a_busy_run_takes_the_next_flush_when_it_comes(
    lone_queue: str, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "_pace", pace_every(0.05))
    next_flush = batch(uid, 0, 3)
    publisher = threading.Timer(0.03, publish_docs, args=(lone_queue, next_flush))
    publisher.start()
    try:
        taken = transfer.take_next_flush(20, behind=False)
    finally:
        publisher.join()
    assert client_msg_ids(taken) == [m["client_msg_id"] for m in next_flush]
    # journaled as the gateway's batches are: the run removes the entry once it handed them off
    [(_msgs, journal)] = taken
    assert journal is not None and journal[0] == lone_queue
    assert get_broker_redis().xrange(journal_key(lone_queue), min=journal[1], max=journal[1])
    assert get_broker_redis().llen(lone_queue) == 0


def test_a_run_waits_out_the_linger_when_nothing_comes_and_leaves_what_comes_later(
    lone_queue: str, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "_pace", pace_every(0.05))
    started = time.monotonic()
    assert transfer.take_next_flush(20, behind=False) == []
    assert time.monotonic() - started >= LINGER_MS / 1000 * 0.95
    publish_docs(lone_queue, batch(uid, 0, 2))
    assert get_broker_redis().llen(lone_queue) == 1  # for the next run, through kombu


def test_a_delivered_batch_runs_with_the_flush_that_came_while_it_waited(
    lone_queue: str, uid: str, monkeypatch: pytest.MonkeyPatch, stack: Any
) -> None:
    """The task as a broker delivery runs it (a request with delivery_info): one run, one commit,
    both flushes' messages in their order, the second flush's entry removed with the first's."""
    monkeypatch.setattr(transfer, "_pace", pace_every(0.05))
    conv = single_conversation_id(f"s{uid}", f"r{uid}")
    first, second = batch(uid, 0, 3), batch(uid, 3, 2)
    journal = [lone_queue, hand_offs.append(lone_queue, first)]
    publisher = threading.Timer(0.03, publish_docs, args=(lone_queue, second))
    publisher.start()
    try:
        ran = transfer.transfer_batch.apply(args=[first], kwargs={"journal": journal})
    finally:
        publisher.join()
    assert ran.get() == 5  # without the wait: 3, and the second flush a run of its own
    assert msg_cache.get_visible_max_seqs([conv]) == {conv: 5}
    cached = msg_cache.get_cached_msgs(conv, range(1, 6))
    assert [cached[seq]["client_msg_id"] for seq in range(1, 6)] == [m["client_msg_id"] for m in first + second]
    hand_offs.later_removals.flush()
    assert get_broker_redis().xlen(journal_key(lone_queue)) == 0


@pytest.mark.parametrize(
    ("gap", "messages", "behind"),
    [(0.5, 20, False), (0.05, 1, False), (0.05, 20, True)],
    ids=["flushes far apart", "a small run", "a worker behind its queues"],
)
def test_runs_that_should_not_wait_do_not_even_look(
    lone_queue: str, uid: str, monkeypatch: pytest.MonkeyPatch, gap: float, messages: int, behind: bool
) -> None:
    monkeypatch.setattr(transfer, "_pace", pace_every(gap))
    publish_docs(lone_queue, batch(uid, 0, 2))
    assert transfer.take_next_flush(messages, behind=behind) == []
    assert get_broker_redis().llen(lone_queue) == 1
