"""The merging persist worker's pure parts: reading a task body, merging hand-offs, and a merged run
that falls back to one message at a time and acknowledges only what ran."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.tasks.batching import BatchedTask, Call, Pending, decode_call, run_batch
from app.tasks.persist import highest_read_seqs, merge_calls


def test_a_task_body_is_args_kwargs_embed() -> None:
    assert decode_call([[1, 2], {"journal": None}, {}]) == ([1, 2], {"journal": None})
    for bad in (None, "x", [[1], {}], [{"a": 1}, {}, {}], [[1], [2], {}]):
        with pytest.raises(ValueError):
            decode_call(bad)


def test_hand_offs_merge_into_one_write_and_keep_every_journal_entry() -> None:
    one: Call = [[["si_a_b", [{"seq": 1}]]], [["si_a_b", "a", 1]]], {"journal": ["persist", "1-0"]}
    two: Call = (
        [[["si_a_b", [{"seq": 2}]], ["si_c_d", [{"seq": 7}]]]],
        {"read_seqs": None, "journal": ["persist", "2-0"]},
    )
    three: Call = [[], [["si_a_b", "a", 2]], ["persist", "3-0"]], {}
    runs, reads, journals = merge_calls([one, two, three])
    assert runs == [["si_a_b", [{"seq": 1}]], ["si_a_b", [{"seq": 2}]], ["si_c_d", [{"seq": 7}]]]
    assert reads == [["si_a_b", "a", 1], ["si_a_b", "a", 2]]
    assert journals == [["persist", "1-0"], ["persist", "2-0"], ["persist", "3-0"]]
    bads: list[Call] = [([], {"nope": 1}), ([1, 2, 3, 4], {}), (["not a list"], {})]
    for bad in bads:
        with pytest.raises(TypeError):
            merge_calls([one, bad])


def test_read_seqs_keep_the_highest_per_conversation_and_user() -> None:
    triples = [("c1", "a", 3), ("c1", "a", 9), ("c1", "b", 2), ("c1", "a", 5), ("c2", "a", 1)]
    assert sorted(highest_read_seqs(triples)) == [("c1", "a", 9), ("c1", "b", 2), ("c2", "a", 1)]


class Recorder(BatchedTask):
    name = "test.recorder"

    def __init__(self, fail_merged: bool, fail_alone: set[int]) -> None:
        self.fail_merged, self.fail_alone = fail_merged, fail_alone
        self.merged: list[list[Call]] = []
        self.alone: list[Call] = []

    def run_many(self, calls: list[Call]) -> None:
        self.merged.append(calls)
        if self.fail_merged:
            raise RuntimeError("merged run failed")

    def run(self, n: int) -> None:
        self.alone.append(([n], {}))
        if n in self.fail_alone:
            raise RuntimeError(f"{n} failed")


def _pending(acks: list[int], n: int) -> Pending:
    return Pending(([n], {}), lambda: acks.append(n))


def test_a_merged_run_acknowledges_every_message_after_it_ran() -> None:
    task, acks = Recorder(False, set()), list[int]()
    run_batch(task, [_pending(acks, n) for n in range(3)])
    assert task.merged == [[([0], {}), ([1], {}), ([2], {})]] and task.alone == []
    assert acks == [0, 1, 2]


def test_a_failed_merged_run_runs_each_message_alone_and_a_failure_stays_its_own() -> None:
    task, acks = Recorder(True, {1}), list[int]()
    run_batch(task, [_pending(acks, n) for n in range(3)])
    assert [c[0][0] for c in task.alone] == [0, 1, 2]
    assert acks == [0, 1, 2]  # as Celery acknowledges a failed acks_late task; the journal keeps 1


def test_after_a_reconnection_nothing_is_acknowledged_on_the_old_channel() -> None:
    task, acks = Recorder(False, set()), list[int]()
    run_batch(task, [_pending(acks, n) for n in range(2)], current=lambda: False)
    assert len(task.merged) == 1 and acks == []


def test_a_persist_hand_off_is_kept_by_its_journal_entry_only_when_it_names_one() -> None:
    from app.pipeline.journal import names_entry
    from app.tasks.persist import journal_of

    assert journal_of(([[], []], {"journal": ["persist", "1-0"]})) == ["persist", "1-0"]
    assert journal_of(([[], [], ["persist", "2-0"]], {})) == ["persist", "2-0"]
    assert journal_of(([[]], {})) is None
    assert names_entry(["persist", "1-0"])
    for bad in (None, [], ["persist"], ["persist", ""], ["persist", 5], "persist 1-0"):
        assert not names_entry(bad)


def test_only_a_worker_consuming_the_task_queue_counts_as_running_it() -> None:
    """Celery builds persist.batch's strategy in every worker: the offline worker (threads pool) must
    not warn that persist merges only on the solo pool, a persist worker on threads must."""
    from celery import Celery

    from app.tasks.batching import consumes_queue_of
    from app.tasks.persist import persist_batch

    app = Celery(set_as_current=False)
    app.config_from_object("celeryconfig")
    app.amqp.queues.select(["offline", "webhooks"])
    assert not consumes_queue_of(persist_batch, app)
    app.amqp.queues.select(["persist"])
    assert consumes_queue_of(persist_batch, app)
    app.amqp.queues.select(["transfer.0", "persist"])
    assert consumes_queue_of(persist_batch, app)


class _Consumer:
    """What the strategy reads of Celery's consumer: its pool, event loop, timer and errors."""

    def __init__(self) -> None:
        from celery.concurrency.solo import TaskPool
        from kombu.asynchronous.timer import Timer

        self.pool = TaskPool()
        self.hub = object()  # an event loop exists: the timer runs flushes in the consumer's thread
        self.timer = Timer()
        self.connection_errors = ()


def _run_timer(timer: Any, seconds: float) -> None:
    """Apply the timer's due entries for `seconds`, as the consumer's event loop does."""
    end = time.monotonic() + seconds
    entries = iter(timer)
    while time.monotonic() < end:
        wait, entry = next(entries)
        if entry is not None:
            timer.apply_entry(entry)
        else:
            time.sleep(min(wait or 0.005, 0.005))


class _Message:
    def __init__(self, n: int) -> None:
        self.n = n

    def decode(self) -> Any:
        return [[self.n], {}, {}]


def _merging(quiet_s: float, linger_s: float) -> tuple[Recorder, Any, _Consumer, list[int]]:
    from app.tasks.batching import strategy

    task = Recorder(False, set())
    task.batch_max, task.batch_linger_s, task.batch_quiet_s = 100, linger_s, quiet_s
    consumer, acks = _Consumer(), list[int]()
    handler = strategy(task, None, consumer)

    def deliver(n: int) -> None:
        handler(_Message(n), None, lambda *_a: acks.append(n), lambda *_a: None, None)

    return task, deliver, consumer, acks


def test_a_steady_stream_is_merged_and_a_pause_runs_the_buffer_before_the_linger() -> None:
    task, deliver, consumer, acks = _merging(quiet_s=0.15, linger_s=2.0)
    started = time.monotonic()
    for n in range(8):  # one every 50 ms: never quiet for 150 ms
        deliver(n)
        _run_timer(consumer.timer, 0.05)
    assert task.merged == []
    _run_timer(consumer.timer, 0.3)  # the pause after the last one
    assert [[c[0][0] for c in calls] for calls in task.merged] == [list(range(8))]
    assert acks == list(range(8))
    assert time.monotonic() - started < 1.5  # well before the 2 s linger


def test_the_linger_bounds_a_stream_that_never_pauses() -> None:
    task, deliver, consumer, acks = _merging(quiet_s=0.15, linger_s=0.3)
    for n in range(20):  # 20 x 50 ms = 1 s of steady arrivals
        deliver(n)
        _run_timer(consumer.timer, 0.05)
    _run_timer(consumer.timer, 0.4)
    sizes = [len(calls) for calls in task.merged]
    assert sum(sizes) == 20 and sorted(acks) == list(range(20))
    assert len(sizes) >= 3  # a run at least every ~300 ms, though the stream never paused 150 ms
    assert [c[0][0] for calls in task.merged for c in calls] == list(range(20))  # in arrival order


def test_without_a_quiet_time_only_the_linger_runs_the_buffer() -> None:
    task, deliver, consumer, _acks = _merging(quiet_s=0.0, linger_s=0.4)
    deliver(1)
    _run_timer(consumer.timer, 0.25)
    assert task.merged == []  # quiet for 250 ms, but no quiet time set: still lingering
    _run_timer(consumer.timer, 0.3)
    assert [len(calls) for calls in task.merged] == [1]
