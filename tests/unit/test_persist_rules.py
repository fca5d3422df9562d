"""Pure rules of the persist stage: what a run must look like."""

from __future__ import annotations

import pytest
from bson.errors import InvalidDocument
from pymongo.errors import AutoReconnect, BulkWriteError, DocumentTooLarge, OperationFailure, WriteError

from app.tasks.persist import NonContiguousRun, check_run, refused_message


def test_a_run_must_be_consecutive_seqs_from_one_up() -> None:
    check_run("si_a_b", [{"seq": 4}, {"seq": 5}, {"seq": 6}])
    broken_runs: list[list[dict[str, int]]] = [
        [],
        [{"seq": 0}],
        [{"seq": 3}, {"seq": 5}],
        [{"seq": 2}, {"seq": 1}],
        [{}],
    ]
    for broken in broken_runs:
        with pytest.raises(NonContiguousRun):
            check_run("si_a_b", broken)


def test_what_counts_as_mongodb_refusing_one_message_and_what_as_an_outage() -> None:
    """A refusal dead-letters the message alone; anything else is waited out or raised (P1)."""
    assert refused_message(InvalidDocument("Key names must not contain the NULL byte"))
    assert refused_message(DocumentTooLarge("too big"))
    assert refused_message(WriteError("dollar", code=52))
    assert refused_message(BulkWriteError({"writeErrors": [{"code": 2, "index": 0}]}))
    assert not refused_message(WriteError("stepping down", code=11600))
    assert not refused_message(BulkWriteError({"writeErrors": [{"code": 91, "index": 0}]}))
    assert not refused_message(BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}))
    assert not refused_message(OperationFailure("not authorized", code=13))
    assert not refused_message(AutoReconnect("down"))
