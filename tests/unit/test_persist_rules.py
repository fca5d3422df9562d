"""Pure rules of the persist stage: what a run must look like."""

from __future__ import annotations

import pytest

from app.tasks.persist import NonContiguousRun, check_run


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
