import threading

from app.pipeline.background import BackgroundJob


def test_the_job_runs_on_its_own_thread_after_a_request() -> None:
    ran_on: list[str] = []
    job = BackgroundJob("test job", lambda: ran_on.append(threading.current_thread().name))
    assert job.runs == 0
    job.request()
    assert job.wait_idle(5)
    assert ran_on == ["test job"]
    assert threading.current_thread().name != "test job"


def test_requests_while_it_runs_are_coalesced_into_one_more_run() -> None:
    release = threading.Event()
    started = threading.Event()
    calls: list[int] = []

    def slow() -> None:
        calls.append(1)
        started.set()
        release.wait(5)

    job = BackgroundJob("slow job", slow)
    job.request()
    assert started.wait(5)
    for _ in range(10):  # all while the first run is still going
        job.request()
    assert not job.wait_idle(0.05)
    release.set()
    assert job.wait_idle(5)
    assert len(calls) == 2


def test_a_failing_job_is_logged_and_runs_again_at_the_next_request() -> None:
    outcomes = iter([RuntimeError("mongo away"), None])
    ran: list[int] = []

    def flaky() -> None:
        ran.append(1)
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    job = BackgroundJob("flaky job", flaky)
    job.request()
    assert job.wait_idle(5)
    job.request()
    assert job.wait_idle(5)
    assert len(ran) == 2 and job.runs == 2
