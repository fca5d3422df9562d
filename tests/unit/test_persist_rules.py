"""Pure rules of the persist stage: what a run must look like, and how merged read seqs combine."""

from __future__ import annotations

import pytest

from app.tasks.persist import NonContiguousRun, check_run, highest_read_seqs


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


def test_merged_read_seqs_keep_the_highest_per_reader_and_conversation() -> None:
    merged = highest_read_seqs(
        [
            [("si_a_b", "a", 5), ("si_a_b", "b", 2)],
            [("si_a_b", "a", 3), ("sg_g", "a", 9)],
            [("si_a_b", "a", 7)],
        ]
    )
    assert sorted(merged) == [("sg_g", "a", 9), ("si_a_b", "a", 7), ("si_a_b", "b", 2)]
    assert highest_read_seqs([[], []]) == []
