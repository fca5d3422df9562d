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
    assert isinstance(pipe, scripts.ScriptsFirstPipeline)
    incr(keys=["n"], args=[5], client=pipe)  # never loaded: NOSCRIPT, then loaded and run again
    pipe.set("seen", 1)
    assert pipe.execute() == [5, True]
    assert own_redis.get("n") == "5"

    incr(keys=["n"], args=[2], client=pipe)  # loaded now: one round trip
    assert pipe.execute() == [7]

    own_redis.script_flush()  # as after a Redis restart
    incr(keys=["n"], args=[3], client=pipe)
    incr(keys=["n"], args=[4], client=pipe)
    assert pipe.execute() == [10, 14]
    assert own_redis.get("n") == "14"


def test_other_errors_are_raised_as_they_are(own_redis: redis.Redis) -> None:
    own_redis.set("text", "not a number")
    incr = own_redis.register_script(INCR)
    pipe = scripts.pipeline(own_redis)
    incr(keys=["text"], args=[1], client=pipe)
    with pytest.raises(redis.ResponseError):
        pipe.execute()
