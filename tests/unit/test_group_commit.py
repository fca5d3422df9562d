"""Group commit: writes handed in during another write are merged; failures stay with their owners."""

from __future__ import annotations

import threading
import time

import pymongo.errors
import pytest

from app.group_commit import GroupCommit


class Recorder:
    def __init__(self, bad: set[int] | None = None, transient: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.bad = bad or set()
        self.transient = transient

    def write(self, items: list[int]) -> None:
        self.calls.append(list(items))
        self.started.set()
        self.release.wait(5)
        if self.transient:
            raise pymongo.errors.AutoReconnect("down")
        if self.bad & set(items):
            raise ValueError(f"cannot write {sorted(self.bad & set(items))}")


def submit_in_threads(commit: GroupCommit[int], items: list[int]) -> tuple[list[threading.Thread], dict[int, object]]:
    outcome: dict[int, object] = {}

    def run(item: int) -> None:
        try:
            commit.submit(item)
            outcome[item] = "ok"
        except Exception as exc:
            outcome[item] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in items]
    for t in threads:
        t.start()
    return threads, outcome


def wait_pending(commit: GroupCommit[int], count: int) -> None:
    deadline = time.monotonic() + 5
    while len(commit._pending) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(commit._pending) == count


def behind_a_busy_writer(rec: Recorder, commit: GroupCommit[int], items: list[int]) -> dict[int, object]:
    """Item 0 is being written while `items` are handed in; then the write finishes. Returns every outcome."""
    first, outcome = submit_in_threads(commit, [0])
    assert rec.started.wait(5)
    rest, more = submit_in_threads(commit, items)
    wait_pending(commit, len(items))
    rec.release.set()
    for t in [*first, *rest]:
        t.join(5)
    return {**outcome, **more}


def test_items_handed_in_during_a_write_go_out_together_in_the_next() -> None:
    rec = Recorder()
    commit: GroupCommit[int] = GroupCommit(rec.write)
    more = behind_a_busy_writer(rec, commit, [1, 2, 3, 4, 5])
    assert rec.calls[0] == [0]
    assert sorted(rec.calls[1]) == [1, 2, 3, 4, 5]
    assert len(rec.calls) == 2 and commit.writes == 2
    assert more == {i: "ok" for i in range(6)}


def test_a_lone_item_is_written_at_once() -> None:
    rec = Recorder()
    rec.release.set()
    commit: GroupCommit[int] = GroupCommit(rec.write)
    commit.submit(7)
    assert rec.calls == [[7]]


def test_a_bad_item_fails_alone_and_the_rest_of_its_group_is_written() -> None:
    rec = Recorder(bad={3})
    commit: GroupCommit[int] = GroupCommit(rec.write)
    outcome = behind_a_busy_writer(rec, commit, [1, 2, 3, 4])
    assert isinstance(outcome.pop(3), ValueError)
    assert outcome == {0: "ok", 1: "ok", 2: "ok", 4: "ok"}
    assert sorted(rec.calls[1]) == [1, 2, 3, 4]  # tried together first, then one by one
    assert sorted(c[0] for c in rec.calls[2:]) == [1, 2, 3, 4]


def test_an_outage_reaches_every_caller_of_the_group_unsplit() -> None:
    rec = Recorder(transient=True)
    commit: GroupCommit[int] = GroupCommit(rec.write)
    outcome = behind_a_busy_writer(rec, commit, [1, 2])
    assert all(isinstance(outcome[i], pymongo.errors.AutoReconnect) for i in (1, 2))
    assert len(rec.calls) == 2  # the merged group was not retried item by item


def test_max_items_bounds_a_merged_write() -> None:
    rec = Recorder()
    commit: GroupCommit[int] = GroupCommit(rec.write, max_items=2)
    behind_a_busy_writer(rec, commit, [1, 2, 3, 4, 5])
    assert [len(c) for c in rec.calls] == [1, 2, 2, 1]


def test_the_writer_going_away_strands_nobody() -> None:
    class Stop(BaseException):
        pass

    calls: list[list[int]] = []

    def write(items: list[int]) -> None:
        calls.append(items)
        raise Stop

    commit: GroupCommit[int] = GroupCommit(write)
    with pytest.raises(Stop):
        commit.submit(1)
    commit._write = lambda items: calls.append(items)
    commit.submit(2)  # a later caller becomes the writer again
    assert calls == [[1], [2]]


def test_with_a_linger_items_handed_in_soon_after_join_the_first_write() -> None:
    rec = Recorder()
    rec.release.set()
    commit: GroupCommit[int] = GroupCommit(rec.write, linger_seconds=0.3)
    first, _ = submit_in_threads(commit, [0])
    time.sleep(0.05)  # the first writer is lingering, not writing yet
    rest, outcome = submit_in_threads(commit, [1, 2])
    for t in [*first, *rest]:
        t.join(5)
    assert [sorted(c) for c in rec.calls] == [[0, 1, 2]]
    assert outcome == {1: "ok", 2: "ok"}
