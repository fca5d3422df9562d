from typing import Any

import gevent
import pytest

from app.batcher import ShardBatcher


def test_batches_per_shard_in_order() -> None:
    published: list[tuple[int, list[Any]]] = []
    batcher = ShardBatcher(lambda shard, msgs: published.append((shard, list(msgs))), 0.01, 3)
    results = [batcher.submit(i % 2, {"n": i}) for i in range(8)]
    for r in results:
        assert r.get(timeout=2) is True
    by_shard: dict[int, list[int]] = {}
    for shard, msgs in published:
        assert 1 <= len(msgs) <= 3
        by_shard.setdefault(shard, []).extend(m["n"] for m in msgs)
    assert by_shard == {0: [0, 2, 4, 6], 1: [1, 3, 5, 7]}
    # eight messages over two shards, at most three a batch: a handful of publishes, not eight
    assert len(published) <= 4


def test_publish_failure_reaches_every_waiter() -> None:
    def fail(shard: int, msgs: list[Any]) -> None:
        raise ConnectionError("broker gone")

    batcher = ShardBatcher(fail, 0.0, 10)
    waiters = [batcher.submit(0, {"n": i}) for i in range(3)]
    for w in waiters:
        with pytest.raises(ConnectionError):
            w.get(timeout=2)


def test_later_messages_wait_for_the_linger() -> None:
    published: list[int] = []
    batcher = ShardBatcher(lambda shard, msgs: published.append(len(msgs)), 0.05, 100)
    first = batcher.submit(0, {"n": 0})
    gevent.sleep(0.01)
    second = batcher.submit(0, {"n": 1})
    first.get(timeout=2)
    second.get(timeout=2)
    assert published == [2]
