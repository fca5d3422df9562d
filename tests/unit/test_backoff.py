"""Which failures `until_done` waits out (app/pipeline/backoff.py): outages, never the data's faults."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.exceptions

from app.pipeline.backoff import until_done


def failing(errors: list[BaseException]) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def operation() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "done"

    return calls, operation


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("gone"),
        redis.exceptions.ClusterDownError("The cluster is down"),
        redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
        redis.exceptions.TryAgainError("TRYAGAIN multiple keys request during rehashing of slot"),
    ],
)
def test_an_outage_or_a_cluster_in_failover_is_waited_out(error: BaseException) -> None:
    calls, operation = failing([error, error])
    slept: list[float] = []
    assert until_done(operation, "commit", sleep=slept.append) == "done"
    assert len(calls) == 3 and slept == [0.1, 0.2]


def test_an_error_of_the_data_is_raised_at_once() -> None:
    calls, operation = failing([redis.exceptions.ResponseError("WRONGTYPE Operation against a key")])
    with pytest.raises(redis.exceptions.ResponseError):
        until_done(operation, "commit", sleep=lambda _s: None)
    assert len(calls) == 1
