"""Hand-offs between stages that survive the death of their consumer on the Redis broker.

kombu's Redis transport pops a message (BRPOP) before it records it as unacknowledged, and keeps a
BRPOP outstanding while the worker is busy: a worker killed then loses the message it had popped.
So on a Redis broker every hand-off to persist and push is also journaled in the broker's Redis (a
stream per queue, `JOURNAL:{queue}`) until its task finished, and each consumer sweeps
entries older than the visibility timeout and runs them itself. Both tasks are idempotent (slots
are overwritten; a repeated push is recognised by clientMsgID), so a late duplicate is harmless.
RabbitMQ does not lose delivered messages: nothing is journaled there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from app.config import settings
from app.pipeline import dead_letters
from app.pipeline.backoff import TRANSIENT_ERRORS
from app.store.redis import cache

log = logging.getLogger(__name__)

JOURNALING = not settings.effective_broker_url.startswith(("amqp://", "pyamqp://", "amqps://"))
SWEEP_EVERY_SECONDS = 5


def send(task: Any, args: list[Any], queue: str) -> None:
    """Publish `task(*args)` on `queue`, journaled first on a Redis broker."""
    journal = [queue, cache.journal_append(queue, args)] if JOURNALING else None
    try:
        task.apply_async(args=args, kwargs={"journal": journal}, queue=queue)
    except Exception:
        if journal:
            cache.journal_remove(*journal)
        raise


def done(journal: list[str] | None) -> None:
    if journal:
        cache.journal_remove(journal[0], journal[1])


def sweep_once(queue: str, run: Callable[..., Any], older_than_seconds: float) -> int:
    """Run every journaled hand-off of `queue` older than the given age; returns how many.

    An entry whose run fails for any reason but an outage is parked in the dead letters (stage
    `journal`) and the sweep goes on with the next one: one bad hand-off never holds back the
    recovery of the others. An outage (backoff.TRANSIENT_ERRORS) ends this round; the entry stays
    for the next round."""
    cutoff_ms = int((time.time() - older_than_seconds) * 1000)
    swept = 0
    while entries := cache.journal_entries(queue, count=100, until=str(cutoff_ms)):
        for entry_id, args in entries:
            try:
                run(*args)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                park(queue, entry_id, args, exc)
            cache.journal_remove(queue, entry_id)
            swept += 1
    return swept


def park(queue: str, entry_id: str, args: Any, error: BaseException) -> None:
    """Move a journaled hand-off that keeps failing to the dead letters, with its reason."""
    log.error("journaled %s hand-off %s failed: parked in the dead letters", queue, entry_id, exc_info=error)
    dead_letters.put(
        "journal",
        f"{queue} hand-off failed: {error!r}"[:300],
        dead_letters.task_payload(queue, args),
        error=error,
        details={"queue": queue, "journalEntry": entry_id},
    )


def start_sweeper(queue: str, run: Callable[..., Any], older_than_seconds: float) -> threading.Thread | None:
    """A daemon thread in the consumer's process (Redis broker only)."""
    if not JOURNALING:
        return None

    def sweep_forever() -> None:
        while True:
            time.sleep(SWEEP_EVERY_SECONDS)
            try:
                swept = sweep_once(queue, run, older_than_seconds)
                if swept:
                    log.warning("ran %d %s hand-offs whose broker message was lost", swept, queue)
            except Exception:
                log.warning("sweeping the %s journal failed; trying again", queue, exc_info=True)

    thread = threading.Thread(target=sweep_forever, name=f"journal-sweeper-{queue}", daemon=True)
    thread.start()
    return thread
