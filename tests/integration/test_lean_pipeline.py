"""The hot path's LeanPipeline against a real redis-server: the same replies as redis-py's own pipeline
for the same commands, error replies raised only after every reply was read (the connection stays
usable), a dropped connection retried, and any other client (a cluster) given its own pipeline.
A private redis-server (conftest's own_redis): the test kills its clients' connections."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from app.store.redis import lean


def _queue_everything(pipe: Any) -> None:
    pipe.set("ack", "first", nx=True, ex=600)
    pipe.set("ack", "second", nx=True, ex=600)  # NX finds it: nil
    pipe.get("ack")
    pipe.get("missing")
    pipe.set("plain", 7)
    pipe.hmget("opts", ["loaded", "g", "si_a_b"])
    pipe.hmget("no-hash", ["loaded", "g"])
    pipe.hgetall("opts")
    pipe.hgetall("no-hash")
    pipe.delete("plain", "missing")
    pipe.set("ack", "third", ex=600)
    pipe.get("ack")


def test_replies_are_redis_pys_for_the_same_commands(own_redis: redis.Redis) -> None:
    own_redis.hset("opts", mapping={"loaded": 1, "g": 2, "si_a_b": 1})
    pipe = lean.pipeline(own_redis)
    assert isinstance(pipe, lean.LeanPipeline)
    _queue_everything(pipe)
    ours = pipe.execute()

    own_redis.delete("ack")
    theirs_pipe = own_redis.pipeline(transaction=False)
    _queue_everything(theirs_pipe)
    theirs = theirs_pipe.execute()

    assert ours == theirs
    assert ours[:3] == [True, None, "first"]
    assert ours[7] == {"loaded": "1", "g": "2", "si_a_b": "1"}
    assert 590 < own_redis.ttl("ack") <= 600
    assert pipe.execute() == []  # executed commands are gone


def test_an_error_reply_is_raised_after_every_reply_was_read(own_redis: redis.Redis) -> None:
    own_redis.set("text", "x")
    pipe = lean.LeanPipeline(own_redis)
    pipe.set("before", 1)
    pipe.hgetall("text")  # WRONGTYPE
    pipe.set("after", 2)
    with pytest.raises(redis.ResponseError, match="command #2 of a pipeline failed: WRONGTYPE"):
        pipe.execute()
    assert own_redis.get("before") == "1" and own_redis.get("after") == "2"  # as redis-py: all ran
    # the connection went back to the pool in step: the next pipeline reads its own replies
    for _ in range(3):
        assert pipe.get("after").get("before").execute() == ["2", "1"]


def test_a_dropped_connection_is_retried(own_redis: redis.Redis) -> None:
    pipe = lean.LeanPipeline(own_redis)
    assert pipe.set("k", "v").get("k").execute() == [True, "v"]
    own_redis.client_kill_filter(_type="normal", skipme=True)  # the pooled connection is gone
    assert pipe.get("k").hmget("h", ["f"]).execute() == ["v", [None]]


def test_a_failure_mid_read_never_returns_a_connection_with_replies_left(
    own_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = lean.LeanPipeline(own_redis)
    assert pipe.get("a").execute() == [None]  # connected (its handshake read before the failures)
    pipe.get("a")
    calls = {"n": 0}

    def failing_read(self: redis.Connection, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        raise KeyboardInterrupt  # not a connection error: no retry

    monkeypatch.setattr(redis.Connection, "read_response", failing_read)
    with pytest.raises(KeyboardInterrupt):
        pipe.execute()
    monkeypatch.undo()
    assert calls["n"] == 1
    own_redis.set("a", "fresh")
    assert pipe.get("a").execute() == ["fresh"]  # not the stale reply of the failed read


def test_any_client_but_a_plain_redis_gets_its_own_pipeline() -> None:
    """A RedisCluster among them (tests/cluster run the gateway on one); a subclass stands in here."""

    class NotPlain(redis.Redis):
        pass

    client = NotPlain(port=1)  # never connects: the pipeline is only built
    assert not isinstance(lean.pipeline(client), lean.LeanPipeline)
