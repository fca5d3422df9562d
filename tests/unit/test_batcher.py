from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import pytest

from app.ws.batcher import Handler, Overdue, ShardBatcher, ShardResults, next_linger, take_batches


def per_shard(handle: Callable[[int, list[Any]], ShardResults]) -> Handler[Any]:
    """A handler answering each shard's batch on its own."""
    return lambda batches: {shard: handle(shard, items) for shard, items in batches.items()}


def test_batches_per_shard_in_order() -> None:
    handled: list[tuple[int, list[Any]]] = []

    def handle(shard: int, items: list[dict[str, int]]) -> list[object]:
        handled.append((shard, list(items)))
        return [item["n"] * 10 for item in items]

    batcher: ShardBatcher[dict[str, int]] = ShardBatcher(per_shard(handle), 0.01, 3)
    results = [batcher.submit(i % 2, {"n": i}) for i in range(8)]
    assert [r.get(timeout=2) for r in results] == [i * 10 for i in range(8)]
    by_shard: dict[int, list[int]] = {}
    for shard, items in handled:
        assert 1 <= len(items) <= 3
        by_shard.setdefault(shard, []).extend(m["n"] for m in items)
    assert by_shard == {0: [0, 2, 4, 6], 1: [1, 3, 5, 7]}
    # eight items over two shards, at most three a batch: a handful of flushes, not eight
    assert len(handled) <= 4


def test_every_shard_waiting_is_flushed_in_one_call() -> None:
    calls: list[dict[int, list[int]]] = []

    def handle(batches: dict[int, list[int]]) -> dict[int, ShardResults]:
        calls.append({shard: list(items) for shard, items in batches.items()})
        return {shard: [i + 100 for i in items] for shard, items in batches.items()}

    batcher: ShardBatcher[int] = ShardBatcher(handle, 0.02, 100)
    waiters = [batcher.submit(i % 4, i) for i in range(12)]
    assert [w.get(timeout=2) for w in waiters] == [i + 100 for i in range(12)]
    assert calls == [{0: [0, 4, 8], 1: [1, 5, 9], 2: [2, 6, 10], 3: [3, 7, 11]}]


def test_a_shard_that_failed_fails_only_its_own_items() -> None:
    def handle(batches: dict[int, list[int]]) -> dict[int, ShardResults]:
        return {
            shard: (ConnectionError("shard 1 lost") if shard == 1 else list(items)) for shard, items in batches.items()
        }

    batcher: ShardBatcher[int] = ShardBatcher(handle, 0.01, 100)
    ok, lost, also_ok = batcher.submit(0, 1), batcher.submit(1, 2), batcher.submit(2, 3)
    assert ok.get(timeout=2) == 1
    assert also_ok.get(timeout=2) == 3
    with pytest.raises(ConnectionError):
        lost.get(timeout=2)


def test_a_shard_the_handler_left_out_fails_with_a_clear_error() -> None:
    batcher: ShardBatcher[int] = ShardBatcher(lambda batches: {0: list(batches[0])}, 0.01, 100)
    kept, forgotten = batcher.submit(0, 1), batcher.submit(1, 2)
    assert kept.get(timeout=2) == 1
    with pytest.raises(RuntimeError, match="answered nothing of 1"):
        forgotten.get(timeout=2)


def test_take_batches_caps_each_shard_and_leaves_the_rest_in_order() -> None:
    pending = {0: [1, 2, 3, 4, 5], 1: [6], 2: [7, 8, 9]}
    assert take_batches(pending, 3) == {0: [1, 2, 3], 1: [6], 2: [7, 8, 9]}
    assert pending == {0: [4, 5]}
    assert take_batches(pending, 3) == {0: [4, 5]}
    assert pending == {}


def test_handler_failure_reaches_every_waiter() -> None:
    def fail(shard: int, items: list[int]) -> list[object]:
        raise ConnectionError("broker gone")

    batcher: ShardBatcher[int] = ShardBatcher(per_shard(fail), 0.0, 10)
    waiters = [batcher.submit(0, i) for i in range(3)]
    for w in waiters:
        with pytest.raises(ConnectionError):
            w.get(timeout=2)


def test_per_item_errors_reach_only_their_waiter() -> None:
    batcher: ShardBatcher[int] = ShardBatcher(
        per_shard(lambda s, items: [ValueError(i) if i == 1 else i for i in items]), 0.0, 10
    )
    waiters = [batcher.submit(0, i) for i in range(3)]
    assert waiters[0].get(timeout=2) == 0
    with pytest.raises(ValueError):
        waiters[1].get(timeout=2)
    assert waiters[2].get(timeout=2) == 2


def test_a_handler_that_answers_too_few_fails_the_batch() -> None:
    batcher: ShardBatcher[int] = ShardBatcher(per_shard(lambda s, items: items[:-1]), 0.0, 10)
    waiters = [batcher.submit(0, i) for i in range(2)]
    with pytest.raises(RuntimeError):
        waiters[0].get(timeout=2)


def test_later_items_wait_for_the_linger() -> None:
    sizes: list[int] = []

    def handle(shard: int, items: list[int]) -> list[object]:
        sizes.append(len(items))
        return list(items)

    batcher: ShardBatcher[int] = ShardBatcher(per_shard(handle), 0.05, 100)
    first = batcher.submit(0, 0)
    gevent.sleep(0.01)
    second = batcher.submit(0, 1)
    first.get(timeout=2)
    second.get(timeout=2)
    assert sizes == [2]


def test_what_arrives_during_a_flush_waits_for_the_next_linger_with_what_follows() -> None:
    sizes: list[int] = []
    batcher: ShardBatcher[int] = ShardBatcher(per_shard(lambda s, items: list(items)), 0.05, 100)

    def handle(batches: dict[int, list[int]]) -> dict[int, ShardResults]:
        sizes.append(sum(map(len, batches.values())))
        if len(sizes) == 1:
            batcher.submit(1, 2)  # arrives while the first flush is being handled
            gevent.sleep(0.01)
        return {shard: list(items) for shard, items in batches.items()}

    batcher._handle = handle
    first = batcher.submit(0, 1)
    first.get(timeout=2)
    gevent.sleep(0.01)
    late = batcher.submit(0, 3)  # after that flush: goes out with the one that came during it
    late.get(timeout=2)
    assert sizes == [1, 2]


def test_busy_shards_linger_longer_and_quiet_ones_keep_the_short_linger() -> None:
    assert next_linger(0.003, 0.02, 0) == 0.003
    assert next_linger(0.003, 0.02, 1) == 0.003
    assert next_linger(0.003, 0.02, 4) == pytest.approx(0.012)
    assert next_linger(0.003, 0.02, 50) == 0.02


def test_after_a_full_batch_the_shard_collects_for_longer() -> None:
    sizes: list[int] = []

    def handle(shard: int, items: list[int]) -> list[object]:
        sizes.append(len(items))
        return list(items)

    batcher: ShardBatcher[int] = ShardBatcher(per_shard(handle), 0.01, 100, max_linger_seconds=0.3)
    for done in [batcher.submit(0, i) for i in range(10)]:
        done.get(timeout=2)
    # the shard was busy: the next one waits up to 10 x 10 ms, so these three go out together
    late = [batcher.submit(0, 10)]
    gevent.sleep(0.05)
    late += [batcher.submit(0, 11), batcher.submit(0, 12)]
    for done in late:
        done.get(timeout=2)
    assert sizes == [10, 3]


def test_answers_reach_callbacks_in_submission_order() -> None:
    answered: list[object] = []
    batcher: ShardBatcher[int] = ShardBatcher(per_shard(lambda s, items: [i * 2 for i in items]), 0.005, 10)
    for i in range(25):
        batcher.submit_with(0, i, answered.append)
    assert batcher.drain(2)
    assert answered == [i * 2 for i in range(25)]
    assert batcher.in_flight == 0


def test_a_failing_callback_costs_no_other_item_its_answer() -> None:
    answered: list[object] = []

    def explode(_result: object) -> None:
        raise RuntimeError("the connection is gone")

    batcher: ShardBatcher[int] = ShardBatcher(per_shard(lambda s, items: list(items)), 0.005, 10)
    batcher.submit_with(0, 0, answered.append)
    batcher.submit_with(0, 1, explode)
    batcher.submit_with(0, 2, answered.append)
    assert batcher.drain(2)
    assert answered == [0, 2]


def test_items_past_the_deadline_are_answered_overdue_and_once() -> None:
    release = gevent.event.Event()

    def stalled(shard: int, items: list[int]) -> list[object]:
        release.wait()  # a broker that stopped answering
        return list(items)

    answered: list[object] = []
    batcher: ShardBatcher[int] = ShardBatcher(per_shard(stalled), 0.0, 10, deadline_seconds=0.2)
    batcher.submit_with(0, 1, answered.append)
    gevent.sleep(0.05)
    batcher.submit_with(0, 2, answered.append)  # behind the stalled batch, pending
    gevent.sleep(0.6)
    assert [type(a) for a in answered] == [Overdue, Overdue]
    release.set()
    assert batcher.drain(2)  # the stalled batch and the one behind it were handled after all
    assert len(answered) == 2  # and their late results were not answered again


def test_a_handler_answer_of_the_wrong_kind_fails_its_items_and_the_batcher_goes_on() -> None:
    """An answer that is neither a list nor an Exception fails that batch's items, and the next
    items are still handled (the flusher is the gateway's only way to the broker)."""
    answers: list[object] = [42, None]

    def handle(batches: dict[int, list[int]]) -> dict[int, ShardResults]:
        if answers:
            return {shard: answers.pop(0) for shard in batches}  # type: ignore[misc]
        return {shard: list(items) for shard, items in batches.items()}

    batcher: ShardBatcher[int] = ShardBatcher(handle, 0.001, 100)
    for _ in range(2):
        with pytest.raises(Exception, match="handler answered"):
            batcher.submit(0, 1).get(timeout=2)
    assert batcher.submit(0, 7).get(timeout=2) == 7
    assert batcher.drain(1)


def test_a_handler_answer_that_is_not_per_shard_fails_its_flush_and_the_batcher_goes_on() -> None:
    """A handler answering a list instead of answers per shard fails that flush's items with a
    clear error; the flusher lives on."""
    flushes: list[int] = []

    def handle(batches: dict[int, list[int]]) -> dict[int, ShardResults]:
        flushes.append(len(batches))
        if len(flushes) == 1:  # the first flush only
            return [list(items) for items in batches.values()]  # type: ignore[return-value]
        return {shard: list(items) for shard, items in batches.items()}

    batcher: ShardBatcher[int] = ShardBatcher(handle, 0.001, 100)
    with pytest.raises(RuntimeError, match="handler answered a list, not answers per shard"):
        batcher.submit(0, 1).get(timeout=2)
    assert batcher.submit(1, 8).get(timeout=2) == 8
    assert batcher.drain(1)


class _Unreadable(dict[int, ShardResults]):
    """Answers per shard that break when read: a bug inside the answering itself."""

    def get(self, key: int, default: Any = None) -> Any:
        raise KeyError(f"shard {key} unreadable")


def test_a_failure_while_answering_a_flush_answers_its_items_at_once_and_the_batcher_goes_on() -> None:
    """Whatever breaks while a flush is answered, its items get that error at once (not the
    watchdog's Overdue, seconds later) and the next flush is handled."""
    flushes: list[int] = []

    def handle(batches: dict[int, list[int]]) -> dict[int, ShardResults]:
        flushes.append(len(batches))
        answers: dict[int, ShardResults] = {shard: list(items) for shard, items in batches.items()}
        return _Unreadable(answers) if len(flushes) == 1 else answers  # the first flush only

    batcher: ShardBatcher[int] = ShardBatcher(handle, 0.001, 100, deadline_seconds=30.0)
    first, second = batcher.submit(0, 1), batcher.submit(1, 2)
    for waiting in (first, second):
        with pytest.raises(KeyError, match="unreadable"):
            waiting.get(timeout=2)
    assert batcher.submit(0, 3).get(timeout=2) == 3
    assert batcher.drain(1)


def _sizes_of_flushes(sizes: list[int]) -> Handler[int]:
    def handle(batches: dict[int, list[int]]) -> dict[int, ShardResults]:
        sizes.append(sum(map(len, batches.values())))
        return {shard: list(items) for shard, items in batches.items()}

    return handle


def test_a_busy_linger_ends_once_as_many_wait_as_the_last_flush_took() -> None:
    """Senders with one message in flight each send again once answered: when all of them have,
    the flush goes out instead of lingering on (base 20 ms: after a flush of 4 the linger is 80 ms)."""
    sizes: list[int] = []
    batcher: ShardBatcher[int] = ShardBatcher(_sizes_of_flushes(sizes), 0.02, 100, max_linger_seconds=1.0)
    first = [batcher.submit(0, i) for i in range(4)]
    for waiting in first:
        waiting.get(timeout=2)
    assert sizes == [4]
    again = []
    for i in range(4):  # the same four senders, answered, send again a moment apart
        again.append(batcher.submit(i % 2, 10 + i))  # shard 0 held 4: the busiest sets the linger
        gevent.sleep(0.005)
    gevent.sleep(0.03)  # well within the 80 ms linger
    late = batcher.submit(0, 20)
    assert [w.get(timeout=2) for w in [*again, late]] == [10, 11, 12, 13, 20]
    assert sizes == [4, 4, 1]  # lingering the full 80 ms would have taken the late one along: [4, 5]


def test_a_busy_linger_with_fewer_waiting_than_the_last_flush_runs_its_course() -> None:
    sizes: list[int] = []
    batcher: ShardBatcher[int] = ShardBatcher(_sizes_of_flushes(sizes), 0.05, 100, max_linger_seconds=1.0)
    for waiting in [batcher.submit(0, i) for i in range(4)]:
        waiting.get(timeout=2)
    three = [batcher.submit(0, 10 + i) for i in range(3)]
    gevent.sleep(0.03)  # well within the 200 ms linger: the fourth joins the three
    fourth = batcher.submit(0, 13)
    assert [w.get(timeout=2) for w in [*three, fourth]] == [10, 11, 12, 13]
    assert sizes == [4, 4]


def test_the_base_linger_is_never_cut_short() -> None:
    """Quiet traffic (a flush of one) keeps its short linger: the next item waits for company."""
    sizes: list[int] = []
    batcher: ShardBatcher[int] = ShardBatcher(_sizes_of_flushes(sizes), 0.2, 100, max_linger_seconds=1.0)
    assert batcher.submit(0, 1).get(timeout=2) == 1
    second = batcher.submit(0, 2)
    gevent.sleep(0.03)  # well within the 200 ms base linger
    third = batcher.submit(1, 3)
    assert (second.get(timeout=2), third.get(timeout=2)) == (2, 3)
    assert sizes == [1, 2]
