"""Scripts on a pipeline without redis-py's SCRIPT EXISTS before every execute: after Redis lost its
scripts (a restart, SCRIPT FLUSH), the pipeline loads them and runs once more, and each script runs once.
A private redis-server (conftest's own_redis): flushing scripts on the shared one would disturb other test runs."""

from __future__ import annotations

import pytest
import redis

from app.store.redis import scripts

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_a_pipeline_runs_its_scripts_once_whether_or_not_redis_still_has_them(own_redis: redis.Redis) -> None:
    incr = own_redis.register_script(INCR)
    pipe = scripts.pipeline(own_redis)
    assert isinstance(pipe, scripts.LeanScriptsPipeline)
    scripts.call(incr, ["n"], [5], pipe)  # never loaded: NOSCRIPT, then loaded and run again
    pipe.set("seen", 1)
    assert pipe.execute() == [5, True]
    assert own_redis.get("n") == "5"

    scripts.call(incr, ["n"], [2], pipe)  # loaded now: one round trip
    assert pipe.execute() == [7]
    assert pipe.execute() == []

    own_redis.script_flush()  # as after a Redis restart
    scripts.call(incr, ["n"], [3], pipe)
    scripts.call(incr, ["n"], [4], pipe)
    assert pipe.execute() == [10, 14]
    assert own_redis.get("n") == "14"
    assert scripts.call(incr, ["n"], [1], own_redis) == 15  # on a client: run at once


def test_queued_replies_are_what_the_script_returns(own_redis: redis.Redis) -> None:
    """Lists, nil and bytes-valued arguments come back as redis-py gives a direct call's reply."""
    echo = own_redis.register_script("return {ARGV[1], KEYS[1], redis.call('GET', KEYS[1]), tonumber(ARGV[2])}")
    pipe = scripts.pipeline(own_redis)
    scripts.call(echo, ["missing"], [b"raw", 42], pipe)
    direct = scripts.call(echo, ["missing"], [b"raw", 42], own_redis)
    assert pipe.execute() == [direct] == [["raw", "missing", None, 42]]


def test_other_errors_are_raised_as_they_are(own_redis: redis.Redis) -> None:
    own_redis.set("text", "not a number")
    incr = own_redis.register_script(INCR)
    pipe = scripts.pipeline(own_redis)
    scripts.call(incr, ["text"], [1], pipe)
    with pytest.raises(redis.ResponseError, match="not an integer"):
        pipe.execute()
