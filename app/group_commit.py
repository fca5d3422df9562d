"""Group commit: many threads hand in writes, one of them writes everything handed in so far at once.

The persist worker runs its tasks in a thread pool. Each task waits here until its own messages are
written, so Celery still acknowledges a task only after MongoDB confirmed it (P1); but the tasks that
arrive while a write is under way are merged into the next one. Slot documents hold 100 messages,
so merged batches of one conversation touch each document once instead of once per task (a MongoDB
update rewrites the whole document).

No thread of its own: the first caller that finds nobody writing becomes the writer and keeps
writing until nothing is pending.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from app.backoff import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, write: Callable[[list[T]], object], max_items: int = 256, linger_seconds: float = 0.0) -> None:
        self._write = write
        self._max_items = max_items
        self._linger = linger_seconds
        self._lock = threading.Lock()
        self._pending: list[tuple[T, Future[None]]] = []
        self._writing = False
        self.writes = 0  # merged writes made, for tests and the bench

    def submit(self, item: T) -> None:
        """Return once `item` was written, or raise what its write raised."""
        done: Future[None] = Future()
        with self._lock:
            self._pending.append((item, done))
            lead = not self._writing
            if lead:
                self._writing = True
        if lead:
            self._write_while_pending()
        done.result()

    def _write_while_pending(self) -> None:
        group: list[tuple[T, Future[None]]] = []
        try:
            while True:
                if self._linger and len(self._pending) < self._max_items:
                    time.sleep(self._linger)  # let more writes join this one
                with self._lock:
                    group, self._pending = self._pending[: self._max_items], self._pending[self._max_items :]
                    if not group:
                        self._writing = False
                        return
                self._write_group(group)
        except BaseException as exc:  # the writer thread itself is going away: nobody may wait forever
            with self._lock:
                stranded, self._pending, self._writing = self._pending, [], False
            for _, done in [*group, *stranded]:
                if not done.done():
                    done.set_exception(exc)
            raise

    def _write_group(self, group: list[tuple[T, Future[None]]]) -> None:
        self.writes += 1
        try:
            self._write([item for item, _ in group])
        except TRANSIENT_ERRORS as exc:  # an outage: each caller waits it out and hands its item in again
            for _, done in group:
                done.set_exception(exc)
            return
        except Exception as exc:
            if len(group) == 1:
                group[0][1].set_exception(exc)
                return
            # Not an outage: write each item alone, so only the one at fault fails.
            log.warning("a merged write of %d items failed; writing them one by one", len(group), exc_info=True)
            for one in group:
                self._write_group([one])
            return
        for _, done in group:
            done.set_result(None)
