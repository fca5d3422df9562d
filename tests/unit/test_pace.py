from app.tasks.pace import FlushPace

LONGEST = 0.04
MIN_MESSAGES = 12


def paced(*arrivals: float) -> FlushPace:
    pace = FlushPace()
    for t in arrivals:
        pace.seen(t)
    return pace


def test_the_gap_is_between_the_last_two_flushes() -> None:
    pace = paced(10.0, 10.5, 10.53)
    assert pace.gap is not None and abs(pace.gap - 0.03) < 1e-9
    due = pace.next_due()
    assert due is not None and abs(due - 10.56) < 1e-9


def test_a_busy_run_waits_while_flushes_come_close_together() -> None:
    assert paced(1.0, 1.033).linger(24, behind=False, longest=LONGEST, min_messages=MIN_MESSAGES) == LONGEST


def test_flushes_further_apart_than_the_wait_are_not_waited_for() -> None:
    # senders waiting for their acks: the next flush comes only after this run is long over
    assert paced(1.0, 1.07).linger(200, behind=False, longest=LONGEST, min_messages=MIN_MESSAGES) == 0.0


def test_a_small_run_does_not_wait_however_close_the_flushes() -> None:
    assert paced(1.0, 1.005).linger(MIN_MESSAGES - 1, behind=False, longest=LONGEST, min_messages=MIN_MESSAGES) == 0.0


def test_a_worker_behind_its_queues_does_not_wait() -> None:
    assert paced(1.0, 1.01).linger(50, behind=True, longest=LONGEST, min_messages=MIN_MESSAGES) == 0.0


def test_no_pace_yet_or_lingering_off_means_no_wait() -> None:
    assert FlushPace().linger(50, behind=False, longest=LONGEST, min_messages=MIN_MESSAGES) == 0.0
    assert paced(5.0).linger(50, behind=False, longest=LONGEST, min_messages=MIN_MESSAGES) == 0.0
    assert FlushPace().next_due() is None
    assert paced(1.0, 1.01).linger(50, behind=False, longest=0.0, min_messages=MIN_MESSAGES) == 0.0
